#!/usr/bin/python3
"""BENCHMARKS-quality.md from scripts/bench-quality.sh's runs.

usage: quality_report.py OUT DATASET...

Reads OUT/DATASET.log (scripts/train.sh's output), OUT/DATASET.cmd,
OUT/DATASET.load and the eval metrics OUT/DATASET/eval/{DATASET,DATASET_class}.json.
"""
import datetime
import json
import os
import re
import sys

out, datasets = sys.argv[1], sys.argv[2:]


def seconds(log, pattern):
    m = re.search(pattern, log)
    return float(m.group(1)) if m else float("nan")


def mark(ok):
    return "met" if ok else "**not met**"


print("# Quality of the generated cells (issue 13)\n")
print("Made by `scripts/bench-quality.sh` on %s (machine: %s, %d cores; CPU libtorch 1.13). "
      "Each dataset runs the whole pipeline, `scripts/train.sh`: autoencoder → encode → backbone → "
      "classifier → sampling (unconditional; every label guided by the classifier, decoded with "
      "`--bn_ref` = the training cells' latents) → `eval` against the real cells. The targets: gene-mean "
      "Spearman ≥ 0.95, kNN real-vs-generated accuracy ≤ 0.65 (0.5: indistinguishable), and the "
      "independent classifier's accuracy on the guided cells ≥ 0.8× its accuracy on held-out real cells.\n"
      % (datetime.date.today().isoformat(), open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t"),
         os.cpu_count()))
for ds in datasets:
    log = open(os.path.join(out, ds + ".log")).read()
    cmd = open(os.path.join(out, ds + ".cmd")).read().strip()
    load = open(os.path.join(out, ds + ".load")).read().strip()
    un = json.load(open(os.path.join(out, ds, "eval", ds + ".json")))
    co = json.load(open(os.path.join(out, ds, "eval", ds + "_class.json")))
    ae = seconds(log, r"autoencoder trained: \d+ steps in ([\d.]+)s")
    bb = seconds(log, r"\ntrained \d+ steps in ([\d.]+)s")
    cl = seconds(log, r"classifier trained: \d+ steps in ([\d.]+)s")
    smp = sum(float(x) for x in re.findall(r"cells sampled in ([\d.]+)s", log))
    print("## %s\n" % ds)
    print("Command: `%s`  " % cmd)
    print("Real cells: %d × %d genes, %d labels. Training time (wall clock): autoencoder %.0f s + backbone %.0f s + "
          "classifier %.0f s = **%.1f min**; sampling %.0f s. Load at the end: `%s`.\n"
          % (un["real"]["cells"], un["genes"]["real"], co["classifier"]["classes"], ae, bb, cl, (ae + bb + cl) / 60, smp, load))
    print("| measure | unconditional | guided, every label | target |")
    print("|---|---|---|---|")
    print("| cells generated | %d | %d | |" % (un["generated"]["cells"], co["generated"]["cells"]))
    s1, s2 = un["gene_means"]["spearman"], co["gene_means"]["spearman"]
    print("| gene-mean Spearman | %.4f (%s) | %.4f (%s) | ≥ 0.95 |" % (s1, mark(s1 >= 0.95), s2, mark(s2 >= 0.95)))
    print("| gene-mean Pearson | %.4f | %.4f | |" % (un["gene_means"]["pearson"], co["gene_means"]["pearson"]))
    k1, k2 = un["knn"]["accuracy"], co["knn"]["accuracy"]
    print("| kNN real-vs-generated accuracy | %.3f (%s) | %.3f (%s) | ≤ 0.65 |" % (k1, mark(k1 <= 0.65), k2, mark(k2 <= 0.65)))
    print("| kNN AUC | %.3f | %.3f | |" % (un["knn"]["auc"], co["knn"]["auc"]))
    print("| MMD (50 PCs) | %.4f | %.4f | |" % (un["mmd"]["value"], co["mmd"]["value"]))
    print("| random-forest real-vs-generated accuracy | %.3f | %.3f | |" % (un["random_forest"]["accuracy"], co["random_forest"]["accuracy"]))
    c = co["classifier"]
    print("| classifier: generated ÷ held-out real accuracy | | %.3f ÷ %.3f = %.2f (%s) | ≥ 0.8 |\n"
          % (c["generated_accuracy"], c["real_accuracy"], c["ratio"], mark(c["ratio"] >= 0.8)))
    print("| label | held-out real cells | real accuracy | guided cells | generated accuracy | ratio |")
    print("|---|---|---|---|---|---|")
    low = []
    for p in c["per_label"]:
        r = p["ratio"]
        if r is None or r < 0.8:
            low.append(p["label"])
        f = lambda v: "—" if v is None else "%.3f" % v
        print("| %s | %d | %s | %d | %s | %s |" % (p["label"], p["real_test_cells"], f(p["real_accuracy"]),
              p["generated_cells"], f(p["generated_accuracy"]),
              "— (no held-out real cell classified right)" if r is None else "%.2f%s" % (r, "" if r >= 0.8 else " (below 0.8)")))
    print("\nPer label: %d of %d labels at ≥ 0.8×%s.\n" % (len(c["per_label"]) - len(low), len(c["per_label"]),
          "; below: " + ", ".join(low) if low else ""))
