#!/usr/bin/env bash
# The chart's PrometheusRule and Grafana dashboard, without a cluster (ctest alert-rules):
#  1. renders charts/netmon with prometheusRule.enabled=true (default thresholds) with helm
#     (scripts/helm-tools.sh), extracts the rule groups from the PrometheusRule, and runs
#     `promtool check rules` and `promtool test rules` on tests/prometheus/*.test.yaml;
#  2. checks that every alert the chart ships has a test case where it fires and one where it
#     does not;
#  3. checks that charts/netmon/dashboards/netmon.json is scripts/make-dashboard.py's output and
#     that every panel query parses (each, its Grafana variables replaced, as a recording rule
#     for `promtool check rules`).
# Needs helm (fetched once), promtool (Debian: prometheus) and python3-yaml.
#
# HELM names the helm binary; default: the one scripts/helm-tools.sh fetches.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
promtool="${PROMTOOL:-/usr/bin/promtool}"
if [[ ! -x "$promtool" ]]; then
  echo "test-alerts.sh: $promtool not found (apt-get install prometheus)" >&2
  exit 1
fi
helm="${HELM:-$("$root/scripts/helm-tools.sh")}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$helm" template netmon "$root/charts/netmon" --namespace netmon --set prometheusRule.enabled=true \
  --show-only templates/prometheusrule.yaml >"$work/prometheusrule.yaml"
cp "$root"/tests/prometheus/*.test.yaml "$work/"

/usr/bin/python3 - "$work" "$root" <<'PY'
import glob, json, os, re, sys
import yaml

work, root = sys.argv[1:]
with open(os.path.join(work, "prometheusrule.yaml")) as f:
    rule = yaml.safe_load(f)
assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
with open(os.path.join(work, "netmon-rules.yaml"), "w") as f:
    yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]

fires, quiet = set(), set()
for path in glob.glob(os.path.join(work, "*.test.yaml")):
    with open(path) as f:
        for test in yaml.safe_load(f)["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
problems = [f"{a}: no test case where it fires" for a in alerts if a not in fires]
problems += [f"{a}: no test case where it does not fire" for a in alerts if a not in quiet]
problems += [f"{a}: tested but not in the chart" for a in sorted((fires | quiet) - set(alerts))]
if problems:
    sys.exit("test-alerts.sh:\n  " + "\n  ".join(problems))
print(f"test-alerts.sh: {len(alerts)} alerts, each tested firing and not firing")

# The dashboard's queries as recording rules, Grafana's variables replaced as Grafana would.
with open(os.path.join(root, "charts", "netmon", "dashboards", "netmon.json")) as f:
    dashboard = json.load(f)
values = {"job": ".*", "instance": ".*", "namespace": ".*", "__rate_interval": "1m",
          "__range": "1h"}
rules = []
for p in dashboard["panels"]:
    for t in p.get("targets", []):
        expr = re.sub(r"\$(__\w+|[a-z]\w*)", lambda m: values[m.group(1)], t["expr"])
        rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": expr})
with open(os.path.join(work, "dashboard-queries.yaml"), "w") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
print(f"test-alerts.sh: {len(rules)} dashboard queries")
PY

/usr/bin/python3 "$root/scripts/make-dashboard.py" --check
"$promtool" check rules "$work/netmon-rules.yaml" "$work/dashboard-queries.yaml"
cd "$work"
"$promtool" test rules ./*.test.yaml
