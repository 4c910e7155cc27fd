"""``rlvr analyze dlogp`` on the shipped tiny model against a perturbed copy of itself (offline)."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr_cli.analysis.dlogp import dlogp_main
from rlvr_cli.models import resolve_model_path


def test_dlogp_histogram_fractions_and_top_tokens(tmp_path, capsys):
    src = resolve_model_path("builtin:tiny_arith")
    rl = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in rl.model.layers[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    rl.save_pretrained(tmp_path / "rl")
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / "rl")
    out = tmp_path / "out"
    res = dlogp_main([f"base={src}", f"rl={tmp_path / 'rl'}", "data=arith", "n=3", "samples=2", "max_new_tokens=24",
                      "threshold=0.05", "top=5", f"out={out}"])
    s = res["summary"]
    assert s["tokens"] > 20 and s["abs_mean"] > 0 and 0 < s["frac_beyond"] <= 1
    assert s["frac_beyond"] == pytest.approx(s["frac_above"] + s["frac_below"])
    pos, neg = res["top_positive"], res["top_negative"]
    assert [t["dlogp"] for t in pos] == sorted((t["dlogp"] for t in pos), reverse=True)
    assert [t["dlogp"] for t in neg] == sorted(t["dlogp"] for t in neg) and neg[0]["dlogp"] < 0 < pos[0]["dlogp"]
    assert all(t["dlogp"] == pytest.approx(t["logp_rl"] - t["logp_base"], abs=1e-5) for t in pos + neg)
    assert json.loads((out / "dlogp.json").read_text())["problems"] == 3
    assert (out / "dlogp_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert "top positive" in capsys.readouterr().out


def test_bad_arguments_are_one_line(tmp_path):
    from rlvr_cli.errors import UserError

    with pytest.raises(UserError, match="valid keys"):
        dlogp_main(["base=a", "rl=b", "data=arith", "bins=3"])
    with pytest.raises(UserError, match="n takes a int"):
        dlogp_main(["base=a", "rl=b", "data=arith", "n=many"])
    with pytest.raises(UserError, match="neither a file nor a data config"):
        dlogp_main(["base=builtin:tiny_arith", "rl=builtin:tiny_arith", "data=nope"])
