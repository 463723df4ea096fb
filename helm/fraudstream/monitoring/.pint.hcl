# pint (github.com/cloudflare/pint), the Prometheus rules linter, offline: the rules alone, no
# Prometheus server (`pint --offline --config .pint.hcl lint rules.yml`; built by .ci/tools
# from .ci/pint; run by tests/deploy/test_pint.py).
parser {
  include = ["rules\\.yml"]
}

# The chart is deployed as one release per namespace or several in one: every aggregation
# keeps `namespace`, so two releases in two namespaces never add up into one series.
rule {
  match {
    kind = "recording"
  }
  aggregate ".+" {
    keep     = ["namespace"]
    severity = "bug"
    comment  = "Keep `namespace` (sum by (namespace, ...)): releases in two namespaces must not mix."
  }
}

rule {
  match {
    kind = "alerting"
  }
  aggregate ".+" {
    keep     = ["namespace"]
    severity = "bug"
    comment  = "Keep `namespace` (sum by (namespace, ...)): releases in two namespaces must not mix."
  }
  label "severity" {
    severity = "bug"
    value    = "(page|ticket)"
    required = true
  }
  annotation "summary" {
    severity = "bug"
    required = true
  }
  annotation "description" {
    severity = "bug"
    required = true
  }
  annotation "runbook_url" {
    severity = "bug"
    value    = "https://github.com/fraudstream/fraudstream/blob/main/helm/fraudstream/monitoring/runbooks/Fraudstream[A-Za-z]+\\.md"
    required = true
  }
}
