#!/usr/bin/env python3
"""Generate tests/fixtures/kayenta_classifier_cases.json from Kayenta's own classifier tests,
the cases tests/it/classifier_kayenta.rs replays through canaryd's classifier.

Why a script: the cases are Kayenta's, not ours. Every Mann-Whitney test of
kayenta-judge/src/test/scala/com/netflix/kayenta/judge/ClassifierSuite.scala
(spinnaker/kayenta, Apache-2.0) becomes one JSON object holding its samples, the classifier's
settings (Kayenta's constructor defaults filled in: tolerance 0.25, confidence 0.95, effect
size and critical thresholds (1.0, 1.0), mean ratio, NaN removal, not critical) and what the
test asserts. Nothing is interpreted: the Rust test maps Kayenta's words onto canaryd's.

Run: python3 scripts/kayenta_classifier_cases.py PATH/TO/ClassifierSuite.scala
(no dependencies; deterministic)
"""

import json
import os
import re
import sys

NUMBER = r"[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?"


def samples(body, name):
    m = re.search(r"val " + name + r"\s*=\s*Array(?:\[Double\])?\((.*?)\)\n", body, re.S)
    if m is None:
        raise SystemExit(f"no {name} array")
    return [float(v) for v in re.findall(NUMBER, m.group(1))]


def pair(ctor, key, default):
    m = re.search(key + r"\s*=\s*\((" + NUMBER + r"),\s*(" + NUMBER + r")\)", ctor)
    return [float(m.group(1)), float(m.group(2))] if m else default


def number(ctor, key, default):
    m = re.search(key + r"\s*=\s*(" + NUMBER + ")", ctor)
    return float(m.group(1)) if m else default


def case(name, body):
    ctor = re.search(r"new MannWhitneyClassifier\((.*?)\)\n", body, re.S).group(1)
    call = re.search(r"classifier\.classify\((.*?)\)\n", body, re.S).group(1)
    expect = {}
    for a in re.findall(r"assert\((.*?)\)\n", body):
        a = a.strip()
        if a.startswith("result.classification == "):
            expect["classification"] = a.rsplit(" ", 1)[1]
        elif a == "result.critical":
            expect["critical"] = True
        elif a == "!result.critical":
            expect["critical"] = False
        elif a == "result.deviation.isNaN":
            expect["deviation_nan"] = True
        elif a == "result.deviation == 1.0":
            expect["deviation"] = 1.0
        else:
            raise SystemExit(f"{name}: unknown assertion {a}")
    if "result.reason should not be empty" in body:
        expect["reason"] = True
    return {
        "name": name,
        "canary": samples(body, "experimentData"),
        "baseline": samples(body, "controlData"),
        "direction": re.search(r"MetricDirection\.(\w+)", call).group(1),
        "nan_strategy": "replace" if "NaNStrategy.Replace" in call else "remove",
        "critical_metric": "isCriticalMetric = true" in call,
        "tolerance": number(ctor, "tolerance", 0.25),
        "confidence": number(ctor, "confLevel", 0.95),
        "effect_size": "cles" if 'effectSizeMeasure="cles"' in ctor else "mean_ratio",
        "effect_thresholds": pair(ctor, "effectSizeThresholds", [1.0, 1.0]),
        "critical_thresholds": pair(ctor, "criticalThresholds", [1.0, 1.0]),
        "expect": expect,
    }


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    text = open(sys.argv[1], encoding="utf-8").read()
    cases = []
    for chunk in re.split(r'\n  test\("', text)[1:]:
        name, body = chunk.split('"', 1)
        if name.startswith("Mann-Whitney"):
            cases.append(case(name, body))
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                       "kayenta_classifier_cases.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": "spinnaker/kayenta ClassifierSuite.scala (Apache-2.0)",
                   "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases -> {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
