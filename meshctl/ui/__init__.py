"""`meshctl ui`: the service map page (server, aggregation, plan view) served on localhost."""
