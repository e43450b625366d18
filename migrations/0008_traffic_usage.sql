-- Requests per route and consumer per hour, from Envoy's usage log as
-- ext-authz reports it (consumer '' for requests without one). Not
-- configuration: no version, no history; rows past the retention go.
CREATE TABLE traffic_usage (
    hour_ms BIGINT NOT NULL,
    route TEXT NOT NULL,
    consumer TEXT NOT NULL,
    requests BIGINT NOT NULL,
    unauthorized BIGINT NOT NULL,
    forbidden BIGINT NOT NULL,
    rate_limited BIGINT NOT NULL,
    client_errors BIGINT NOT NULL,
    server_errors BIGINT NOT NULL,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, route, consumer)
);
CREATE INDEX traffic_usage_by_consumer ON traffic_usage (consumer, hour_ms);
