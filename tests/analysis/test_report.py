import json

from mnemoscope.analysis.report import analyze

REQUIRED = ("metric", "reliance", "ablation", "patching", "entropy", "gradients", "utilization")


def test_analyze_every_arch(arch, make_model, task):
    m = make_model(arch, task)
    seen = []
    rep = analyze(m, task, samples=3, progress=seen.append)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    for key in REQUIRED:
        assert key in d
    assert d["metric"]["name"] == task.metric_name
    if task.metric_name == "wrong_bits":  # copy of 3 bits x 3 steps: chance is half the 9 bits
        assert d["metric"]["chance"] == 4.5
    assert isinstance(d["metric"]["clean"], float)
    rel = d["reliance"]
    assert rel["verdict"] in ("undetermined", "decorative", "functional", "redundant", "partial")
    assert isinstance(rel["warnings"], list) and 0 <= rel["stability"] <= 1
    assert 0 <= rel["score"] <= 1 and len(rel["ci95"]) == 2 and rel["evidence"]
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    text = rep.to_text()
    assert "memory reliance" in text and arch in text


def test_real_ntm_report(ntm):
    from mnemoscope.models.tasks import make_task

    task = make_task("copy", min_length=6, max_length=6)
    rep = analyze(ntm, task, samples=6)
    d = rep.to_dict()
    assert d["reliance"]["verdict"] == "functional"
    assert d["patching"]["summary"]["sites"]["memory.read"]["max"] > 0.1
    assert {"mean memory", "zero memory", "resample memory (donors 0)", "mean state"} <= {a["label"] for a in d["ablation"]}
    assert d["gradients"]["attribution"]["memory"] > 0 and "gradient x activation" in rep.to_text()
