#!/usr/bin/env python3
"""Questions to a Prometheus server over its HTTP API, for
tests/scaleout/run.sh. Exits 0 when the answer is as asked, 1 otherwise
(with the reason on standard output), 2 when Prometheus cannot be asked.

    prom.py URL value EXPR            the value of a one-series result
    prom.py URL targets-up JOB N      N targets of JOB, all healthy
    prom.py URL alert NAME STATE [LABEL=VALUE...]
                                      an alert NAME in STATE (firing,
                                      pending; "none": no such alert) with
                                      those labels
    prom.py URL dashboard FILE RATE INSTANCE...
                                      every query of the Grafana dashboard
                                      FILE returns data: $__rate_interval
                                      is RATE, $job is taskd, $instance each
                                      INSTANCE in turn; histogram quantiles
                                      must be numbers, not NaN
"""

import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


def api(base, path, **params):
    url = f"{base}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    except (OSError, ValueError) as e:
        print(f"cannot ask {url}: {e}")
        sys.exit(2)
    if body.get("status") != "success":
        return None, body.get("error", body)
    return body["data"], None


def value(base, expr):
    data, err = api(base, "query", query=expr)
    if err:
        print(f"{expr}: {err}")
        return 1
    res = data["result"]
    if len(res) != 1:
        print(f"{expr}: {len(res)} series, want 1")
        return 1
    v = float(res[0]["value"][1])
    print(int(v) if v.is_integer() else v)
    return 0


def targets_up(base, job, n):
    data, err = api(base, "targets", state="active")
    if err:
        print(err)
        return 1
    ts = [t for t in data["activeTargets"] if t["labels"].get("job") == job]
    up = [t for t in ts if t["health"] == "up"]
    if len(ts) == int(n) and len(up) == len(ts):
        return 0
    print(", ".join(f'{t["labels"]["instance"]}: {t["health"]} {t["lastError"]}'.strip() for t in ts) or "no target")
    return 1


def alert(base, name, state, labels):
    data, err = api(base, "alerts")
    if err:
        print(err)
        return 1
    want = dict(kv.split("=", 1) for kv in labels)
    found = [
        a for a in data["alerts"]
        if a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in want.items())
    ]
    states = sorted(a["state"] for a in found)
    if (state == "none" and not found) or (state != "none" and state in states):
        return 0
    print(f"{name} {want}: {states or 'no such alert'}, want {state}")
    return 1


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def dashboard(base, path, rate, instances):
    with open(path) as f:
        dash = json.load(f)
    bad = 0
    checked = 0
    # The template variables' queries: label_values(SELECTOR, LABEL).
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
        if not m:
            continue
        sel = m.group(1).replace("$job", "taskd")
        data, err = api(base, f"label/{m.group(2)}/values", **{"match[]": sel})
        checked += 1
        if err or not data:
            print(f"FAIL variable {v['name']}: {q}: {err or 'no values'}")
            bad += 1
        else:
            print(f"ok   variable {v['name']}: {data}")
    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", rate).replace("$job", "taskd")
            for inst in instances if "$instance" in expr else [None]:
                e = expr.replace("$instance", inst) if inst else expr
                data, err = api(base, "query", query=e)
                checked += 1
                where = f'panel "{p["title"]}"' + (f" ({inst})" if inst else "")
                if err:
                    print(f"FAIL {where}: {e}: {err}")
                    bad += 1
                    continue
                res = data["result"]
                values = [float(r["value"][1]) for r in res]
                if not res:
                    print(f"FAIL {where}: {e}: no data")
                    bad += 1
                elif all(math.isnan(x) for x in values):
                    print(f"FAIL {where}: {e}: only NaN")
                    bad += 1
                else:
                    print(f"ok   {where}: {len(res)} series")
    print(f"{checked} queries, {bad} without data")
    return 1 if bad or not checked else 0


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    base, cmd, args = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3:]
    if cmd == "value" and len(args) == 1:
        return value(base, args[0])
    if cmd == "targets-up" and len(args) == 2:
        return targets_up(base, *args)
    if cmd == "alert" and len(args) >= 2:
        return alert(base, args[0], args[1], args[2:])
    if cmd == "dashboard" and len(args) >= 3:
        return dashboard(base, args[0], args[1], args[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
