#!/usr/bin/env bash
# Check that this kernel can run meshctl's datapath, and say everything that is missing at once.
# meshctl needs: the bpf() syscall (CONFIG_BPF_SYSCALL), BTF of the kernel (CONFIG_DEBUG_INFO_BTF,
# /sys/kernel/btf/vmlinux: libbpf relocates the datapath with it) and tcx attachment
# (CONFIG_NET_XGRESS, kernel 6.6 or newer). Exit 0 when all is there, 1 otherwise.
# The inputs can be pointed elsewhere (tests): KERNEL_RELEASE, KERNEL_CONFIG (plain or .gz), KERNEL_BTF.
set -uo pipefail

release=${KERNEL_RELEASE:-$(uname -r)}
btf=${KERNEL_BTF:-/sys/kernel/btf/vmlinux}
config=${KERNEL_CONFIG:-}
if [ -z "$config" ]; then
  for c in "/boot/config-$release" /proc/config.gz; do
    [ -r "$c" ] && { config=$c; break; }
  done
fi

missing=()
unknown=()

major=${release%%.*}
rest=${release#*.}
minor=${rest%%[!0-9]*}
if ! [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]]; then
  unknown+=("kernel version (cannot read '$release')")
elif (( major < 6 || (major == 6 && minor < 6) )); then
  missing+=("kernel 6.6 or newer for tcx attachment (this is $release)")
fi

option() {  # y, m, n or ? (no readable config)
  [ -n "$config" ] && [ -r "$config" ] || { echo "?"; return; }
  local line
  if [[ $config == *.gz ]]; then line=$(zcat "$config" 2>/dev/null | grep -E "^$1=" || true)
  else line=$(grep -E "^$1=" "$config" 2>/dev/null || true); fi
  echo "${line#*=}" | grep -E '^[ym]$' || echo n
}

need() {  # need CONFIG_X "what it gives"
  case $(option "$1") in
    y|m) ;;
    \?) unknown+=("$1 ($2)") ;;
    *) missing+=("$1 ($2)") ;;
  esac
}
if [ "$(option CONFIG_BPF_SYSCALL)" = "?" ] && [ -e /proc/sys/kernel/unprivileged_bpf_disabled ]; then
  :  # no config, but this sysctl exists only with the bpf() syscall
else
  need CONFIG_BPF_SYSCALL "the bpf() syscall"
fi
need CONFIG_NET_XGRESS "tcx hooks"
[ -r "$btf" ] || missing+=("$btf (the kernel's BTF; built with CONFIG_DEBUG_INFO_BTF=y)")

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: this kernel ($release) cannot run meshctl's datapath; missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  [ ${#unknown[@]} -gt 0 ] && printf '  ? %s: not checked, no kernel config found\n' "${unknown[@]}" >&2
  exit 1
fi
if [ ${#unknown[@]} -gt 0 ]; then
  echo "setup: kernel $release: no readable kernel config (${config:-/boot/config-$release, /proc/config.gz}); not checked:" >&2
  printf '  ? %s\n' "${unknown[@]}" >&2
fi
exit 0
