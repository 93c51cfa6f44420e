#!/usr/bin/env bash
# Validate the deployment files in deploy/ with whatever tools are available.
#
#   bash deploy/check.sh            (from the repository root, or anywhere)
#
# Exit status: 0 when every check that could run passed, 1 when any failed.
# A check whose tool is missing, or cannot run in this environment (e.g. nft
# without netlink permission), is reported as SKIP with the reason; an
# invalid file is always a FAIL.
#
# Tools used when present: python3 (+ PyYAML, tomllib), promtool (Debian
# package `prometheus`), nft (`nftables`), systemd-analyze (`systemd`),
# unshare/ip (util-linux, iproute2), shellcheck, kubernetes-validate (PyPI).
# Environment: ICPGATE_CHECK_NO_INSTALL=1 disables the automatic
# `pip install pyyaml` when PyYAML is missing.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
D=deploy

PASSED=()
SKIPPED=()
FAILED=()
pass() { PASSED+=("$1"); printf 'PASS  %s\n' "$1"; }
skip() { SKIPPED+=("$1: $2"); printf 'SKIP  %s: %s\n' "$1" "$2"; }
fail() { FAILED+=("$1"); printf 'FAIL  %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'; }
have() { command -v "$1" >/dev/null 2>&1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

FILES=(
	"$D/README.md"
	"$D/check.sh"
	"$D/systemd/icpgate.service"
	"$D/nftables/icpgate-tproxy.nft"
	"$D/nftables/icpgate-redirect.nft"
	"$D/nftables/tproxy-routing.sh"
	"$D/nftables/netns-smoke.sh"
	"$D/kubernetes/icpgate.yaml"
	"$D/prometheus/icpgate-alerts.yml"
	"$D/prometheus/icpgate-alerts.test.yml"
	"$D/grafana/icpgate-dashboard.json"
)

echo "== files"
missing=""
for f in "${FILES[@]}"; do [ -s "$f" ] || missing+="$f "; done
if [ -z "$missing" ]; then pass "all ${#FILES[@]} deployment files present"; else fail "missing or empty files" "$missing"; fi

# ---------------------------------------------------------------- python ---
echo "== python"
PY=""
if have python3; then
	PY=python3
	echo "     $(python3 --version 2>&1)"
else
	skip "JSON/YAML/TOML checks" "python3 not found"
fi

if [ -n "$PY" ] && ! $PY -c 'import yaml' 2>/dev/null; then
	if [ "${ICPGATE_CHECK_NO_INSTALL:-0}" != 1 ]; then
		echo "     PyYAML missing: pip install pyyaml"
		$PY -m pip install -q pyyaml >"$TMP/pip.log" 2>&1 || $PY -m pip install -q --user pyyaml >>"$TMP/pip.log" 2>&1 || true
	fi
	if ! $PY -c 'import yaml' 2>/dev/null; then
		fail "PyYAML unavailable (install python3-yaml or pip install pyyaml): YAML files cannot be validated"
	fi
fi

# ------------------------------------------------------------------ JSON ---
echo "== grafana dashboard (JSON)"
if [ -n "$PY" ]; then
	if out=$($PY -m json.tool "$D/grafana/icpgate-dashboard.json" 2>&1 >/dev/null); then
		pass "json.tool: grafana/icpgate-dashboard.json is valid JSON"
	else
		fail "json.tool: grafana/icpgate-dashboard.json" "$out"
	fi
fi

# Structural / cross-file checks, in one Python program. It prints lines
# "PASS msg", "FAIL msg" or "SKIP msg: reason", and writes the dashboard's
# PromQL into a rules file for promtool to parse.
if [ -n "$PY" ] && $PY -c 'import yaml' 2>/dev/null; then
	echo "== structure and cross-file consistency"
	cat >"$TMP/check.py" <<'PYEOF'
import ipaddress, json, re, sys

import yaml

D, TMP = sys.argv[1], sys.argv[2]
results = []
def check(ok, msg, detail=""):
    results.append(("PASS" if ok else "FAIL", msg + ("" if ok or not detail else f" -- {detail}")))
def skip(msg, why):
    results.append(("SKIP", f"{msg}: {why}"))

METRICS = {
    "icpgate_decisions_total", "icpgate_table_entries",
    "icpgate_table_loaded_timestamp_seconds", "icpgate_table_age_seconds",
    "icpgate_table_reloads_total", "icpgate_table_reload_failing",
    "icpgate_connections_active", "icpgate_connections_total",
    "icpgate_connections_rejected_total", "icpgate_connections_shed_total",
    "icpgate_connections_refused_total", "icpgate_block_logs_suppressed_total",
    "icpgate_quic_flows_active", "icpgate_quic_dropped_total",
    "icpgate_sniff_total",
    "icpgate_upstream_connect_errors_total",
    "icpgate_decision_duration_seconds_bucket", "icpgate_decision_duration_seconds_sum",
    "icpgate_decision_duration_seconds_count", "icpgate_build_info",
    "icpgate_decision_duration_seconds",  # the histogram's base name (in prose)
}
def metric_names(text):
    return set(re.findall(r"\bicpgate_[a-z0-9_]+\b", text))

# --- YAML files parse
docs = {}
for f in ["kubernetes/icpgate.yaml", "prometheus/icpgate-alerts.yml", "prometheus/icpgate-alerts.test.yml"]:
    try:
        with open(f"{D}/{f}", encoding="utf-8") as fh:
            docs[f] = [d for d in yaml.safe_load_all(fh) if d is not None]
        check(True, f"yaml: {f} parses ({len(docs[f])} document(s))")
    except Exception as e:  # noqa: BLE001
        check(False, f"yaml: {f} parses", str(e))

def nft_prefixes(path):
    text = open(path, encoding="utf-8").read()
    out = set()
    for body in re.findall(r"elements\s*=\s*\{([^}]*)\}", text):
        out |= {ipaddress.ip_network(x.strip()) for x in body.split(",") if x.strip()}
    return out

# --- Kubernetes
k8s = docs.get("kubernetes/icpgate.yaml")
if k8s:
    kinds = [d.get("kind") for d in k8s]
    check(all(isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name") for d in k8s),
          "k8s: every document has apiVersion, kind, metadata.name")
    ds = [d for d in k8s if d.get("kind") == "DaemonSet"]
    cms = {d["metadata"]["name"]: d for d in k8s if d.get("kind") == "ConfigMap"}
    check(len(ds) == 1, "k8s: exactly one DaemonSet", f"kinds={kinds}")
    if ds:
        ds = ds[0]
        spec = ds["spec"]["template"]["spec"]
        check(ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(),
              "k8s: DaemonSet selector matches the pod template labels")
        check(spec.get("hostNetwork") is True, "k8s: DaemonSet hostNetwork: true")
        check(spec.get("terminationGracePeriodSeconds") == 40, "k8s: terminationGracePeriodSeconds 40")
        check(spec.get("nodeSelector", {}).get("node-role.kubernetes.io/edge-gateway") == "",
              'k8s: nodeSelector node-role.kubernetes.io/edge-gateway: ""')
        check(any(t.get("key") == "node-role.kubernetes.io/edge-gateway" for t in spec.get("tolerations", [])),
              "k8s: tolerates the edge-gateway taint")
        ctr = [c for c in spec["containers"] if c["name"] == "icpgate"]
        check(len(ctr) == 1, "k8s: container icpgate exists")
        if ctr:
            c = ctr[0]
            sc = c.get("securityContext", {})
            caps = sc.get("capabilities", {})
            check("NET_ADMIN" in caps.get("add", []), "k8s: icpgate container adds NET_ADMIN")
            check({"NET_RAW", "NET_BIND_SERVICE"} <= set(caps.get("add", [])), "k8s: icpgate container adds NET_RAW, NET_BIND_SERVICE")
            check(caps.get("drop") == ["ALL"], "k8s: icpgate container drops ALL capabilities")
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("privileged") is not True,
                  "k8s: readOnlyRootFilesystem, no privilege escalation, not privileged")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            lp, rp = c.get("livenessProbe", {}).get("httpGet", {}), c.get("readinessProbe", {}).get("httpGet", {})
            check(lp.get("path") == "/healthz" and rp.get("path") == "/readyz",
                  "k8s: liveness /healthz, readiness /readyz")
            probe_port = {ports.get(p, p) for p in (lp.get("port"), rp.get("port"))}
            ann = ds["spec"]["template"]["metadata"].get("annotations", {})
            check(ann.get("prometheus.io/scrape") == "true", "k8s: prometheus.io/scrape annotation")
            check(c.get("resources", {}).get("requests") and c.get("resources", {}).get("limits"),
                  "k8s: icpgate container has resource requests and limits")
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
            args = c.get("args", [])
            cfg_path = args[args.index("--config") + 1] if "--config" in args else ""
            check("config" in mounts and cfg_path == mounts["config"].rstrip("/") + "/icpgate.toml",
                  "k8s: --config points into the mounted ConfigMap", f"{cfg_path} vs {mounts}")
            vols = {v["name"] for v in spec.get("volumes", [])}
            allm = {m["name"] for cc in spec.get("containers", []) + spec.get("initContainers", []) for m in cc.get("volumeMounts", [])}
            check(allm <= vols, "k8s: every volumeMount has a volume", str(allm - vols))
        # ConfigMap with icpgate.toml
        cm = cms.get("icpgate-config")
        check(cm is not None and "icpgate.toml" in cm.get("data", {}), "k8s: ConfigMap icpgate-config has icpgate.toml")
        try:
            import tomllib
        except ImportError:
            try:
                import tomli as tomllib
            except ImportError:
                tomllib = None
        if cm is None or tomllib is None:
            skip("k8s: icpgate.toml content", "no tomllib/tomli" if tomllib is None else "no ConfigMap")
        else:
            try:
                cfg = tomllib.loads(cm["data"]["icpgate.toml"])
                check(True, "toml: icpgate.toml in the ConfigMap parses")
                ls = cfg.get("listener", [])
                check(any(l.get("addr") == "0.0.0.0:15001" for l in ls), "toml: transparent listener on 0.0.0.0:15001")
                check(all("upstream" not in l and l.get("transparent") in ("tproxy", "redirect")
                          and l.get("upstream_fwmark") == 2 and l.get("proxy_protocol") is False for l in ls),
                      'toml: listeners are transparent (no upstream), upstream_fwmark = 2, proxy_protocol = false')
                check(cfg.get("table", {}).get("url") == "https://filings.internal.example/export.csv.gz",
                      "toml: [table] url")
                admin = cfg.get("admin", {}).get("addr", "")
                aport = int(admin.rsplit(":", 1)[1]) if ":" in admin else None
                check(ctr and probe_port == {aport} and ann.get("prometheus.io/port") == str(aport),
                      "k8s: probes and scrape annotation use the [admin] port", f"admin={admin} probes={probe_port}")
                mainland = {ipaddress.ip_network(x) for x in cfg.get("regions", {}).get("mainland", [])}
                for nft in ("icpgate-tproxy.nft", "icpgate-redirect.nft"):
                    got = nft_prefixes(f"{D}/nftables/{nft}")
                    check(got == mainland, f"consistency: nft sets in {nft} == [regions] mainland",
                          f"nft={sorted(map(str, got))} toml={sorted(map(str, mainland))}")
            except Exception as e:  # noqa: BLE001
                check(False, "toml: icpgate.toml in the ConfigMap parses", str(e))
        ns = cms.get("icpgate-netsetup")
        if ns:
            for name, text in ns.get("data", {}).items():
                try:
                    same = open(f"{D}/nftables/{name}", encoding="utf-8").read() == text
                except FileNotFoundError:
                    same = False
                check(same, f"consistency: ConfigMap icpgate-netsetup/{name} == deploy/nftables/{name}",
                      "regenerate the ConfigMap data from the file")

# --- Prometheus rules: metric names
alerts = docs.get("prometheus/icpgate-alerts.yml")
if alerts:
    names = set()
    required = {"IcpgateTableStale", "IcpgateTableReloadRejected", "IcpgateTableShrunk", "IcpgateBlockRateSpike",
                "IcpgateUpstreamConnectErrors", "IcpgateDown", "IcpgateNotReady", "IcpgateConnectionLimit",
                "IcpgateDecisionLatencyHigh"}
    bad_ann = []
    for g in alerts[0]["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                names.add(r["alert"])
                a = r.get("annotations", {})
                if not all(a.get(k) for k in ("summary", "description", "runbook")) or "severity" not in r.get("labels", {}):
                    bad_ann.append(r["alert"])
    check(required <= names, "alerts: all required alerts defined", str(required - names))
    check(not bad_ann, "alerts: every alert has severity and summary/description/runbook", str(bad_ann))
    unknown = metric_names(json.dumps(alerts)) - METRICS
    check(not unknown, "alerts: only the documented icpgate metric names are used", str(sorted(unknown)))

# --- Grafana dashboard
try:
    dash = json.load(open(f"{D}/grafana/icpgate-dashboard.json", encoding="utf-8"))
except Exception as e:  # noqa: BLE001
    dash = None
if dash:
    check(dash.get("uid") == "icpgate", 'grafana: uid "icpgate"')
    check(36 <= dash.get("schemaVersion", 0) <= 41, "grafana: schemaVersion ~39", str(dash.get("schemaVersion")))
    tv = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    check(tv.get("datasource", {}).get("type") == "datasource" and tv["datasource"].get("query") == "prometheus",
          "grafana: Prometheus datasource variable")
    check(tv.get("instance", {}).get("type") == "query", "grafana: templated instance variable")
    panels = dash.get("panels", [])
    ids = [p["id"] for p in panels]
    check(len(ids) == len(set(ids)), "grafana: panel ids unique")
    cells, overlap, outside = {}, [], []
    for p in panels:
        gp = p["gridPos"]
        if gp["x"] < 0 or gp["x"] + gp["w"] > 24:
            outside.append(p["title"])
        for x in range(gp["x"], gp["x"] + gp["w"]):
            for y in range(gp["y"], gp["y"] + gp["h"]):
                if (x, y) in cells:
                    overlap.append((cells[(x, y)], p["title"]))
                cells[(x, y)] = p["title"]
    check(not outside and not overlap, "grafana: panels inside the 24-column grid, no overlaps",
          str(outside or sorted(set(overlap))[:3]))
    exprs, ds_bad = [], []
    for p in panels:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            ds_bad.append(p["title"])
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${datasource}":
                ds_bad.append(p["title"])
            exprs.append((p["title"], t["expr"]))
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            exprs.append(("annotation " + a["name"], a["expr"]))
    check(not ds_bad, "grafana: every panel/target uses the ${datasource} variable", str(ds_bad))
    titles = " | ".join(p["title"].lower() for p in panels)
    want = ["block rate by reason", "decisions by protocol", "allow / block", "table age", "table entries",
            "reloads by result", "reload failing", "latency", "active connections", "sniff", "upstream connect errors"]
    check(all(w in titles for w in want), "grafana: all required panels present", str([w for w in want if w not in titles]))
    unknown = set().union(*(metric_names(e) for _, e in exprs)) - METRICS
    check(not unknown, "grafana: only the documented icpgate metric names are used", str(sorted(unknown)))
    # Hand the PromQL to promtool: a rules file with one recording rule per
    # expression, Grafana variables replaced by concrete values.
    rules = [{"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
             for i, (_, e) in enumerate(exprs)]
    with open(f"{TMP}/dashboard-exprs.rules.yml", "w") as fh:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, fh)
    results.append(("INFO", f"{len(rules)} dashboard expressions written for promtool"))

for status, msg in results:
    print(f"{status} {msg}")
PYEOF
	$PY "$TMP/check.py" "$D" "$TMP" >"$TMP/check.out" 2>&1
	pyrc=$?
	while IFS= read -r line; do
		status=${line%% *}
		msg=${line#* }
		case "$status" in
			PASS) pass "$msg" ;;
			FAIL) fail "$msg" ;;
			SKIP) skip "${msg%%: *}" "${msg#*: }" ;;
			INFO) echo "      $msg" ;;
			*) echo "      $line" ;;
		esac
	done <"$TMP/check.out"
	[ $pyrc -eq 0 ] || fail "structure checks crashed (python exit $pyrc, traceback above)"
fi

# Kubernetes schema validation (optional tool from PyPI).
if have kubernetes-validate; then
	kv_ver=$(kubernetes-validate --version 2>/dev/null)
	if out=$(kubernetes-validate --strict --quiet "$D/kubernetes/icpgate.yaml" 2>&1); then
		pass "kubernetes-validate $kv_ver --strict: kubernetes/icpgate.yaml matches the API schemas"
	else
		fail "kubernetes-validate --strict: kubernetes/icpgate.yaml" "$out"
	fi
else
	skip "Kubernetes API schema validation" "kubernetes-validate not installed (pip install kubernetes-validate)"
fi

# ------------------------------------------------------------ Prometheus ---
echo "== prometheus"
if have promtool; then
	echo "     $(promtool --version 2>&1 | head -1)"
	if out=$(promtool check rules "$D/prometheus/icpgate-alerts.yml" 2>&1); then
		pass "promtool check rules: prometheus/icpgate-alerts.yml ($(echo "$out" | grep -o '[0-9]* rules found'))"
	else
		fail "promtool check rules: prometheus/icpgate-alerts.yml" "$out"
	fi
	if out=$(promtool test rules "$D/prometheus/icpgate-alerts.test.yml" 2>&1); then
		pass "promtool test rules: alert unit tests (prometheus/icpgate-alerts.test.yml)"
	else
		fail "promtool test rules: prometheus/icpgate-alerts.test.yml" "$out"
	fi
	if [ -s "$TMP/dashboard-exprs.rules.yml" ]; then
		if out=$(promtool check rules "$TMP/dashboard-exprs.rules.yml" 2>&1); then
			pass "promtool: every PromQL expression of the Grafana dashboard parses"
		else
			fail "promtool: Grafana dashboard PromQL" "$out"
		fi
	fi
else
	skip "promtool check/test rules" "promtool not found (apt-get install prometheus)"
fi

# -------------------------------------------------------------- nftables ---
echo "== nftables"
# nft -c needs a netlink socket to the kernel. Without permission it fails
# with EPERM before parsing; then retry in a private user+network namespace
# (where we are root), and only skip if that is impossible too.
nft_check() { # $1 = file
	local f=$1 out rc
	out=$(nft -c -f "$f" 2>&1); rc=$?
	if [ $rc -eq 0 ]; then pass "nft -c -f $f"; return; fi
	if printf '%s' "$out" | grep -Eqi 'Operation not permitted|Permission denied|cache initialization failed|Protocol not supported|Could not (open|connect).*netlink'; then
		if have unshare && out2=$(unshare --user --map-root-user --net nft -c -f "$f" 2>&1); then
			pass "nft -c -f $f (in a private user+net namespace; host netlink: permission denied)"
			return
		fi
		if have unshare && ! unshare --user --map-root-user --net true 2>/dev/null; then
			skip "nft -c -f $f" "no netlink permission ($(printf '%s' "$out" | head -1)) and no user namespaces to retry in"
			return
		fi
		if [ -n "${out2:-}" ] && printf '%s' "$out2" | grep -Eqi 'Operation not permitted|Permission denied|cache initialization failed'; then
			skip "nft -c -f $f" "no netlink permission: $(printf '%s' "$out2" | head -1)"
			return
		fi
		fail "nft -c -f $f" "${out2:-$out}"
		return
	fi
	fail "nft -c -f $f" "$out"
}
if have nft; then
	echo "     $(nft --version 2>&1)"
	nft_check "$D/nftables/icpgate-tproxy.nft"
	nft_check "$D/nftables/icpgate-redirect.nft"
else
	skip "nft -c -f (both rule files)" "nft not found (apt-get install nftables)"
fi

# The mark and port the rules use must match the config keys.
for f in "$D/nftables/icpgate-tproxy.nft" "$D/nftables/icpgate-redirect.nft"; do
	if grep -Eq '^[[:space:]]*meta mark 0x2 return' "$f" && grep -q ':15001' "$f"; then
		pass "$f: bypasses mark 0x2 (upstream_fwmark = 2) and targets :15001"
	else
		fail "$f: must bypass 'meta mark 0x2' and target :15001"
	fi
done
if grep -Eq '^[[:space:]]*socket transparent 1 .*meta mark set 0x1' "$D/nftables/icpgate-tproxy.nft"; then
	pass "$D/nftables/icpgate-tproxy.nft: established transparent sockets short-cut (socket transparent 1)"
else
	fail "$D/nftables/icpgate-tproxy.nft: missing the 'socket transparent 1' rule"
fi

# Routing helper: syntax, lint, and an idempotency run in a throw-away netns.
R="$D/nftables/tproxy-routing.sh"
if out=$(sh -n "$R" 2>&1); then pass "sh -n $R"; else fail "sh -n $R" "$out"; fi
if have shellcheck; then
	if out=$(shellcheck -s sh "$R" 2>&1); then pass "shellcheck $R"; else fail "shellcheck $R" "$out"; fi
	for f in "$D/check.sh" "$D/nftables/netns-smoke.sh"; do
		if out=$(shellcheck -s bash "$f" 2>&1); then pass "shellcheck $f"; else fail "shellcheck $f" "$out"; fi
	done
else
	skip "shellcheck" "not installed"
fi
if have ip && have unshare && unshare --user --map-root-user --net true 2>/dev/null; then
	# shellcheck disable=SC2016
	if out=$(unshare --user --map-root-user --net sh -ec '
		ip link set lo up
		sh "$1" up >/dev/null; sh "$1" up >/dev/null
		[ "$(ip -4 rule show | grep -c "fwmark 0x1 lookup 100")" = 1 ]
		[ "$(ip -6 rule show | grep -c "fwmark 0x1 lookup 100")" = 1 ]
		ip -4 route show table 100 | grep -q "^local default dev lo"
		ip -6 route show table 100 | grep -q "^local default dev lo"
		sh "$1" down >/dev/null
		[ "$(ip -4 rule show | grep -c "fwmark 0x1")" = 0 ]
		[ "$(ip -6 rule show | grep -c "fwmark 0x1")" = 0 ]
	' sh "$R" 2>&1); then
		pass "$R: up twice adds each rule/route once (v4+v6), down removes them (private netns)"
	else
		fail "$R: idempotency run in a private netns" "$out"
	fi
else
	skip "$R functional run" "ip or user+net namespaces not available"
fi

# End-to-end: real TCP connections through both rule sets in throw-away
# network namespaces (needs root; exit 77 = cannot run here).
if out=$(timeout 120 bash "$D/nftables/netns-smoke.sh" 2>&1); then
	pass "netns-smoke.sh: $(printf '%s\n' "$out" | grep -c '^ok') end-to-end checks through the TPROXY and REDIRECT rules (v4+v6, mark 0x2 bypass)"
else
	rc=$?
	if [ $rc -eq 77 ]; then
		skip "netns-smoke.sh" "$(printf '%s\n' "$out" | grep -m1 '^SKIP' | sed 's/^SKIP: //')"
	else
		fail "netns-smoke.sh (exit $rc)" "$out"
	fi
fi

# --------------------------------------------------------------- systemd ---
echo "== systemd"
U="$D/systemd/icpgate.service"
miss_unit=""
# shellcheck disable=SC2016 # $MAINPID is literal text in the unit file
for k in 'ExecStart=/usr/local/bin/icpgate run --config /etc/icpgate/icpgate.toml' \
	'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' 'KillSignal=SIGTERM' \
	'LimitNOFILE=1048576' 'ProtectSystem=strict' 'NoNewPrivileges=yes' 'MemoryDenyWriteExecute=yes' \
	'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK' 'SystemCallFilter=@system-service' \
	'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW' \
	'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW'; do
	grep -qxF "$k" "$U" 2>/dev/null || miss_unit+="$k; "
done
if [ -z "$miss_unit" ]; then pass "$U: required directives present"; else fail "$U: missing lines: $miss_unit"; fi
if have systemd-analyze; then
	echo "     $(systemd-analyze --version 2>&1 | head -1)"
	# verify also checks that ExecStart's binary exists; when icpgate is not
	# installed here, verify a copy whose ExecStart points at a stub.
	unit="$U"
	note=""
	if [ ! -x /usr/local/bin/icpgate ]; then
		mkdir -p "$TMP/unit"
		printf '#!/bin/sh\nexit 0\n' >"$TMP/unit/icpgate" && chmod +x "$TMP/unit/icpgate"
		sed "s#/usr/local/bin/icpgate#$TMP/unit/icpgate#g" "$U" >"$TMP/unit/icpgate.service"
		unit="$TMP/unit/icpgate.service"
		note=" (ExecStart binary stubbed: /usr/local/bin/icpgate not installed)"
	fi
	out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$unit" 2>&1); rc=$?
	if [ $rc -eq 0 ] && [ -z "$out" ]; then
		pass "systemd-analyze verify $U$note"
	elif printf '%s' "$out" | grep -Eqi 'Failed to (initialize|set up|setup) manager|Failed to allocate manager|cgroup.*(not|Read-only)|Operation not permitted' \
		&& ! printf '%s' "$out" | grep -q 'icpgate.service:'; then
		skip "systemd-analyze verify" "cannot run here: $(printf '%s' "$out" | head -1)"
	else
		# Warnings (unknown keys, bad values) are printed with rc 0: fail on them too.
		fail "systemd-analyze verify $U$note" "$out"
	fi
	if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
		out=$(systemd-analyze security --offline=yes --threshold=30 "$U" 2>&1); rc=$?
		score=$(printf '%s' "$out" | grep -o 'exposure level for icpgate.service: [0-9.]*' | awk '{print $NF}')
		if [ $rc -eq 0 ] && [ -n "$score" ]; then
			pass "systemd-analyze security --offline: exposure $score (<= 3.0 required)"
		else
			fail "systemd-analyze security --offline: exposure ${score:-?} > 3.0" "$(printf '%s' "$out" | tail -3)"
		fi
	else
		skip "systemd-analyze security" "this systemd-analyze has no --offline"
	fi
else
	skip "systemd-analyze verify" "systemd-analyze not found (apt-get install systemd)"
fi

# ---------------------------------------------------------------- README ---
echo "== README"
miss=""
for k in 'upstream_fwmark = 2' 'transparent = "tproxy"' 'transparent = "redirect"' 'proxy_protocol = false' \
	'[[listener]]' 'addr' 'icpgate-tproxy.nft' 'icpgate-redirect.nft' 'tproxy-routing.sh' 'icpgate.service' \
	'icpgate.yaml' 'icpgate-alerts.yml' 'icpgate-dashboard.json'; do
	grep -qF "$k" "$D/README.md" 2>/dev/null || miss+="$k; "
done
if [ -z "$miss" ]; then pass "$D/README.md mentions the config keys and every file"; else fail "$D/README.md lacks: $miss"; fi
if out=$(bash -n "$D/check.sh" 2>&1); then pass "bash -n $D/check.sh"; else fail "bash -n $D/check.sh" "$out"; fi

# --------------------------------------------------------------- summary ---
echo
echo "== summary: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "   skipped: $s"; done
for f in "${FAILED[@]+"${FAILED[@]}"}"; do echo "   FAILED:  $f"; done
[ ${#FAILED[@]} -eq 0 ]
