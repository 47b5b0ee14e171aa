#!/usr/bin/env bash
# Printed by `make run`: how to call the service it is about to start.
token="${NEOTENANT_ADMIN__TOKEN:-dev-platform-token-0123456789abcdef}"
cat <<EOF2

NeoTenantApi on http://127.0.0.1:8080  (Ctrl-C stops it gracefully)

  API reference     http://127.0.0.1:8080/docs      (OpenAPI: /openapi.json)
  Health            curl -s localhost:8080/healthz ; curl -s localhost:8080/readyz
  Metrics           curl -s localhost:8080/metrics

  Tenant-scoped calls name the tenant (subdomain or X-Tenant) and carry a token from its
  Keycloak realm; scripts/demo-token.sh makes a demo user and prints one:
    TOKEN=\$(scripts/demo-token.sh demo-us)
    curl -s -X POST localhost:8080/v1/notes -H 'X-Tenant: demo-us' -H "Authorization: Bearer \$TOKEN" \\
         -H 'Content-Type: application/json' -d '{"title":"hello"}'
    TOKEN=\$(scripts/demo-token.sh demo-eu)
    curl -s http://demo-eu.localhost:8080/v1/notes -H "Authorization: Bearer \$TOKEN"

  The demo user starts as a member; make it the tenant's owner (after its first call), then
  try roles, teams, the org chart and the audit log:
    curl -s -X POST localhost:8080/admin/v1/tenants/demo-us/role-assignments \\
         -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' \\
         -d '{"role":"owner","email":"demo@demo-us.example"}'
    curl -s localhost:8080/v1/me/permissions?explain=true -H 'X-Tenant: demo-us' -H "Authorization: Bearer \$TOKEN"
    curl -s "localhost:8080/v1/teams/chart?format=svg" -H 'X-Tenant: demo-us' -H "Authorization: Bearer \$TOKEN" > chart.svg
    curl -s localhost:8080/v1/audit -H 'X-Tenant: demo-us' -H "Authorization: Bearer \$TOKEN"
    target/debug/neotenant audit verify --tenant demo-us

  Keycloak admin console: http://127.0.0.1:18180 (admin / admin-dev-password)

  Platform admin (token from neotenant.toml, development only):
    curl -s localhost:8080/admin/v1/tenants -H 'Authorization: Bearer $token'
    curl -s -X POST localhost:8080/admin/v1/tenants -H 'Authorization: Bearer $token' \\
         -H 'Content-Type: application/json' \\
         -d '{"slug":"acme","display_name":"Acme","region":"eu","isolation":"schema"}'

EOF2
