"""Record real host records from the running exposure lab into tests/unit/fixtures/records/.

ufw_info runs on every lab host (ansible ad-hoc) and sip_probe's engine probes every host from
the controller; build_host_record() joins them, exactly as the verify role does.
Usage: sglab.py up tests/lab/scenarios/exposure.yml && record_host_records.py OUTDIR
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sglab  # noqa: E402


def main(outdir):
    sglab._model()
    from ansible_collections.sipguard.firewall.plugins.module_utils.host_record import build_host_record
    from ansible_collections.sipguard.firewall.plugins.module_utils.sip_prober import probe_targets

    lab = sglab.load_lab(os.environ.get("SIPGUARD_LAB_DIR", sglab.DEFAULT_WORKDIR))
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    proc = subprocess.run([ansible, "sipguard_lab", "-i", lab["inventory"], "-o", "-m", "sipguard.firewall.ufw_info"],
                          text=True, check=True, stdout=subprocess.PIPE, timeout=600)
    infos = {}
    for line in proc.stdout.splitlines():
        host, rest = line.split(" | ", 1)
        infos[host] = json.loads(rest.split(" => ", 1)[1])
    targets = [a for h in lab["hosts"].values() for a in (h["ipv4"], h["ipv6"])]
    probes = probe_targets(targets, ["5060/udp", "5060/tcp", "5061/tcp"], timeout=1.0, retries=1)
    os.makedirs(outdir, exist_ok=True)
    for name, host in sorted(lab["hosts"].items()):
        mine = [p for p in probes if p["address"] in (host["ipv4"], host["ipv6"])]
        record = build_host_record(name, infos.get(name), mine, checked_at="2026-11-25T00:00:00Z")
        with open(os.path.join(outdir, "exposure-lab__%s.json" % name), "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True)
    print("recorded %d host records into %s" % (len(lab["hosts"]), outdir))


if __name__ == "__main__":
    main(sys.argv[1])
