"""Load on loopback (bench/load_test.py) with the tiny model: 20 concurrent clients chat through the API
and vote in the arena for a bounded time; every vote is stored and no request fails."""

import sys

import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))


def test_twenty_clients_chat_and_vote_without_losing_a_vote(tiny_model_dir, tmp_path):
    import load_test

    files = []
    for name, tokens in (("tiny-a", 8), ("tiny-b", 4)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "model": {"base": str(tiny_model_dir), "quantization": "none",
                                                                "device": "cpu"},
                                        "generation": {"max_new_tokens": tokens}}))
        files.append(str(path))
    app_args = ["--variant", files[0], "--arena", files[0], "--arena", files[1], "--concurrency", "4",
                "--reports", str(tmp_path / "no-reports")]
    data = tmp_path / "feedback"
    data.mkdir()
    result = load_test.run(clients=20, seconds=8, app_args=app_args, data=data)
    assert result["errors"] == []
    assert result["votes_sent"] >= 20  # every client voted at least once
    assert result["votes_stored"] == result["votes_sent"]
    assert result["chats"] >= 20 and 0 < result["ttft_p50"] <= result["ttft_p95"]
