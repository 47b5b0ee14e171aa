#!/usr/bin/env bash
# Printed by `make run`: how to call the service it is about to start.
token="${NEOTENANT_ADMIN__TOKEN:-dev-platform-token-0123456789abcdef}"
cat <<EOF2

NeoTenantApi on http://127.0.0.1:8080  (Ctrl-C stops it gracefully)

  API reference     http://127.0.0.1:8080/docs      (OpenAPI: /openapi.json)
  Health            curl -s localhost:8080/healthz ; curl -s localhost:8080/readyz
  Metrics           curl -s localhost:8080/metrics

  Tenant-scoped calls name the tenant by subdomain or X-Tenant header:
    curl -s -X POST localhost:8080/v1/notes -H 'X-Tenant: demo-us' \\
         -H 'Content-Type: application/json' -d '{"title":"hello"}'
    curl -s http://demo-eu.localhost:8080/v1/notes

  Platform admin (token from neotenant.toml, development only):
    curl -s localhost:8080/admin/v1/tenants -H 'Authorization: Bearer $token'
    curl -s -X POST localhost:8080/admin/v1/tenants -H 'Authorization: Bearer $token' \\
         -H 'Content-Type: application/json' \\
         -d '{"slug":"acme","display_name":"Acme","region":"eu","isolation":"schema"}'

EOF2
