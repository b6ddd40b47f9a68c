#!/usr/bin/env python3
"""Writes the scale bench's rule folder (benches/scale_support/setup.rs: TEMPLATES_YAML and
rule_yaml with the FULL timing) for N services, for `canaryd check` without the bench.

Usage: scripts/scale_rules.py N OUT_DIR benches/scale_support/setup.rs"""
import os, re, sys
n, out = int(sys.argv[1]), sys.argv[2]
src = open(sys.argv[3]).read()  # benches/scale_support/setup.rs
templates = re.search(r'pub const TEMPLATES_YAML: &str = r#"(.*?)"#;', src, re.S).group(1)
body = re.search(r'format!\(\s*r#"(.*?)"#,', src[src.index('pub fn rule_yaml'):], re.S).group(1)
os.makedirs(out, exist_ok=True)
open(os.path.join(out, 'signals.templates.yaml'), 'w').write(templates)
hook = lambda p: f'http://127.0.0.1:40000{p}'
for i in range(n):
    s = f'svc-{i:05}'
    text = (body.replace('{{', '\0').replace('}}', '\1')
            .replace('{service}', s).replace('{rate}', '30s').replace('{interval}', '10s')
            .replace('{step}', '10s').replace('{window}', '120s').replace('{warmup}', '10s')
            .replace('{sw}', hook('/weight')).replace('{pr}', hook('/promote'))
            .replace('{rb}', hook('/rollback'))
            .replace('\0', '{').replace('\1', '}'))
    open(os.path.join(out, f'{s}.yaml'), 'w').write(text)
