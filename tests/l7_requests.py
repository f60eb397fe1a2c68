"""The seed's api-http-policy (examples/l7-changes) against requests with expected statuses: the
privileged test sends them through Envoy, the unit test through meshctl's own evaluator."""

from __future__ import annotations

JSON = {"Content-Type": "application/json"}
# (method, path, headers, expected status): the three rules' edges (method, case, anchoring of
# path regexes at both ends, the query string as part of the path, exact header values).
REQUESTS: list[tuple[str, str, dict[str, str], int]] = [
    ("GET", "/api/v1/products", {}, 200),
    ("GET", "/api/v1/products/", {}, 200),
    ("GET", "/api/v1/products/42", {}, 200),
    ("GET", "/api/v1/products?page=2", {}, 200),
    ("GET", "/api/v1/productsXYZ", {}, 200),
    ("GET", "/api/v1/product", {}, 403),
    ("GET", "/API/v1/products", {}, 403),
    ("GET", "/v2/api/v1/products", {}, 403),
    ("GET", "//api/v1/products", {}, 403),
    ("HEAD", "/api/v1/products", {}, 403),
    ("POST", "/api/v1/products", JSON, 403),
    ("PUT", "/api/v1/products", {}, 403),
    ("DELETE", "/api/v1/products/1", {}, 403),
    ("OPTIONS", "/api/v1/products", {}, 403),
    ("GET", "/api/v1/users/42", {}, 200),
    ("GET", "/api/v1/users/0", {}, 200),
    ("GET", "/api/v1/users/1234567890", {}, 200),
    ("GET", "/api/v1/users/", {}, 403),
    ("GET", "/api/v1/users", {}, 403),
    ("GET", "/api/v1/users/abc", {}, 403),
    ("GET", "/api/v1/users/42/orders", {}, 403),
    ("GET", "/api/v1/users/42?expand=1", {}, 403),
    ("GET", "/api/v1/users/-1", {}, 403),
    ("POST", "/api/v1/users/42", JSON, 403),
    ("POST", "/api/v1/orders", JSON, 200),
    ("POST", "/api/v1/orders", {"content-type": "application/json"}, 200),
    ("POST", "/api/v1/orders", {}, 403),
    ("POST", "/api/v1/orders", {"Content-Type": "text/plain"}, 403),
    ("POST", "/api/v1/orders", {"Content-Type": "application/json; charset=utf-8"}, 403),
    ("POST", "/api/v1/orders/1", JSON, 403),
    ("POST", "/api/v1/Orders", JSON, 403),
    ("GET", "/api/v1/orders", JSON, 403),
    ("PUT", "/api/v1/orders", JSON, 403),
    ("PATCH", "/api/v1/orders", JSON, 403),
]
