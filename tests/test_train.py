"""Training on the tiny model: what changes, what is written, and that training renders what serving renders."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from assistant.generate import Bot
from assistant.settings_reader import ConfigError
from assistant.training.config import load_train_config
from tests.conftest import ROOT

INTENTS = ["returns", "shipping", "billing"]


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    """A training config on the tiny model with two tasks (chat replies, intent labels)."""
    rows = []
    for i in range(48):
        intent = INTENTS[i % 3]
        rows.append({"messages": [
            {"role": "user", "content": f"Question {i} about {intent} for order {1000 + i}", "intent": intent},
            {"role": "assistant", "content": f"Answer {i}: {intent} takes {i % 7 + 2} days."}]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": "What about refunds for a broken kettle lid?",
                                                     "reference": "Refunds take 5 days."}) + "\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nReturns take 30 days.\n\n# Shipping\n\nShipping takes 3 days.\n")
    (tmp_path / "variant.yaml").write_text(yaml.safe_dump({
        "model": {"base": str(tiny_model_dir), "quantization": "none", "device": "cpu"},
        "prompt": {"template": "support.j2", "variables": {"company": "Acme", "persona": "an agent", "tone": "Be brief."}},
        "context": {"documents": "docs", "top_k": 1},
        "generation": {"max_new_tokens": 8},
    }))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "name": "tiny-adapter", "variant": "variant.yaml", "output_dir": "adapters", "runs_dir": "runs",
        "tasks": [{"name": "support", "file": "train.jsonl"},
                  {"name": "intent", "file": "train.jsonl", "kind": "label", "label_field": "intent", "weight": 0.5}],
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "training": {"max_steps": 8, "batch_size": 4, "learning_rate": 0.005, "eval_every": 4, "patience": 0,
                     "validation_split": 0.25, "test_file": "eval.jsonl"},
    }))
    return tmp_path


def test_training_example_is_the_served_prompt_plus_the_answer(workspace):
    from assistant.generate import IGNORE
    from assistant.training.data import serving_variant

    config = load_train_config(workspace / "train.yaml")
    bot = Bot(serving_variant(config))
    history = [{"role": "user", "content": "How long do returns take?"}]
    ids, labels = bot.encode(history, "Returns take 30 days.")
    served = bot.prepare(history)
    n = len(served.input_ids)
    assert ids[:n] == served.input_ids  # identical up to the answer ...
    assert labels[:n] == [IGNORE] * n  # ... which is all the loss sees
    answer = bot.tokenizer.decode(ids[n:])
    assert answer.startswith("Returns take 30 days.<|im_end|>")
    assert "returns.md" in bot.tokenizer.decode(ids[:n])  # retrieval is part of the trained prompt


def test_mixture_weights_are_copies_per_epoch(workspace):
    from assistant.training.data import prepare_data, serving_variant

    config = load_train_config(workspace / "train.yaml")
    data = prepare_data(config, serving_variant(config))
    assert data.stats.examples == {"support": 36, "intent": 36}
    assert data.stats.validation == {"support": 12, "intent": 12}
    assert data.stats.mixture == {"support": 36, "intent": 18}


def test_preflight_estimate_counts_steps_and_uses_the_measured_speed(workspace):
    from assistant.training.data import prepare_data, serving_variant
    from assistant.training.sft import StepTiming, estimate, task_labels

    config = load_train_config(workspace / "train.yaml")  # max_steps 8, batches of 4 over a 54-example mixture
    data = prepare_data(config, serving_variant(config))
    plan = estimate(config, data, None)
    assert (plan.optimizer_steps, plan.epochs) == (8, round(8 / 14, 2))
    assert plan.training_tokens == int(data.stats.train_tokens_per_epoch * (8 / 14))
    assert plan.describe() == f"optimizer steps 8, epochs 0.57, training tokens {plan.training_tokens}"  # unmeasured
    measured = estimate(config, data, StepTiming(tokens_per_second=10.0, forward_tokens_per_second=30.0,
                                                 load_seconds=6.0, peak_memory_bytes=2.0**30, startup_seconds=4.0))
    assert measured.measured_tokens_per_second == 10.0 and measured.peak_memory_gib == 1.0
    # start-up and loading, the training tokens at the training rate, and every forward-only evaluation at its
    # own rate: validation before, every eval_every steps and after, the test file before and after, and each
    # validation example of a label task once per label
    t = config.training
    labels = {task.name: len(task_labels(data, task.name)) for task in config.tasks if task.kind == "label"}
    forward = ((8 // t.eval_every + 2) * sum(len(e.input_ids) for v in data.validation.values() for e in v)
               + 2 * sum(len(e.input_ids) for e in data.test)
               + sum(len(e.input_ids) * n for task, n in labels.items() for e in data.validation.get(task, [])))
    assert data.test and labels and all(n > 1 for n in labels.values())
    assert measured.estimated_minutes == round((4.0 + 6.0 + plan.training_tokens / 10.0 + forward / 30.0) / 60, 1)
    assert measured.describe().endswith(f", measured tokens per second 10.0, estimated minutes "
                                        f"{measured.estimated_minutes}, peak memory gib 1.0")


def test_data_check_with_a_config_prints_the_counts_and_a_measured_preflight(workspace, capsys):
    from assistant.cli.parser import main

    assert main(["data", "check", "--config", str(workspace / "train.yaml"), "--set", "training.max_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "support: 36 train, 12 validation, 36 per epoch in the mixture" in out
    assert "intent: 36 train, 12 validation, 18 per epoch in the mixture" in out
    preflight = next(line for line in out.splitlines() if line.startswith("pre-flight: "))
    assert preflight.startswith("pre-flight: optimizer steps 4, epochs 0.29, training tokens ")
    assert ", measured tokens per second " in preflight and ", peak memory gib " in preflight


def test_train_changes_only_lora_weights_and_writes_a_complete_adapter(workspace):
    import torch
    from safetensors.torch import load_file

    from assistant.training.data import serving_variant
    from assistant.training.sft import build_model, train

    config = load_train_config(workspace / "train.yaml")
    _, fresh = build_model(config, serving_variant(config))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    folder = train(config, quiet=True)

    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "card.yaml", "loss.csv", "loss.png",
        "tensorboard", "variant.yaml"]
    assert not list((workspace / "adapters").glob(".*"))  # no staging folder left behind
    trained = load_file(folder / "adapter_model.safetensors")
    lora_b = [k for k in trained if "lora_B" in k]
    assert lora_b and all(trained[k].abs().sum() > 0 for k in lora_b)  # B starts at zero: it moved

    # Base weights are untouched: reload the adapter onto a fresh base and compare every non-LoRA tensor.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(config.resolve("variant.yaml").parent / serving_variant(config).model.base)
    tuned = PeftModel.from_pretrained(base, folder)
    after = tuned.state_dict()
    for key, value in before.items():
        if "lora_" not in key:
            assert torch.equal(after[key], value), key

    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert card["prompt_template"]["name"] == "support.j2" and len(card["prompt_template"]["sha256"]) == 12
    assert card["base_model"]["location_sha256"] and card["base_model"]["quantization"] == "none"
    assert set(card["data"]["files"]) == {os.path.relpath(workspace / "train.jsonl", folder)}  # no machine paths
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == serving_variant(config).model.base
    assert card["hyperparameters"]["lora"]["r"] == 4 and card["training"]["steps"] == 8
    assert list(card["data"]) == ["files", "examples", "validation", "mixture", "tokens", "train_tokens_per_epoch",
                                  "answer_tokens_per_epoch"]  # the prepared data's stats, as before
    assert card["data"]["mixture"] == {"support": 36, "intent": 18} and card["data"]["tokens"]["count"] > 0
    for split in ("base", "adapter"):
        assert {"eval_support_loss", "eval_intent_loss", "test_loss"} <= set(card["metrics"][split])
    assert card["metrics"]["adapter"]["eval_support_loss"] < card["metrics"]["base"]["eval_support_loss"]
    intent = card["metrics"]["labels"]["intent"]  # validation labels as the adapter predicts them, recorded
    assert sum(intent["predicted"].values()) == sum(intent["true"].values()) == 12
    assert set(intent["true"]) == set(INTENTS) and set(intent["predicted"]) <= set(INTENTS)
    assert "torch" in card["packages"] and card["training"]["wall_seconds"] > 0
    losses = (folder / "loss.csv").read_text().splitlines()
    assert losses[0].startswith("step,") and "eval_support_loss" in losses[0] and len(losses) > 2
    assert list((folder / "tensorboard").rglob("events.out.tfevents.*"))


def test_adapter_loads_in_a_fresh_process_with_transformers_and_peft_only(workspace):
    from transformers import TrainerCallback

    from assistant.training.sft import train

    class Seen(TrainerCallback):
        steps: list = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.steps.append(state.global_step)

    config = load_train_config(workspace / "train.yaml", ["training.max_steps=2", "training.eval_every=2"])
    folder = train(config, quiet=True, callbacks=[Seen()])
    assert 2 in Seen.steps  # extra callbacks (the sweep's pruner) take part in the run
    base = yaml.safe_load((workspace / "variant.yaml").read_text())["model"]["base"]
    code = (f"import sys; from transformers import AutoModelForCausalLM; from peft import PeftModel; "
            f"m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), {str(folder)!r}); "
            f"assert not any(n.startswith('assistant') for n in sys.modules); print(type(m).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "PeftModelForCausalLM"


def test_served_adapter_variant_answers_from_the_adapter(workspace):
    from assistant.training.sft import train
    from assistant.variants import load_variant

    folder = train(load_train_config(workspace / "train.yaml"), quiet=True)
    served = load_variant(folder / "variant.yaml")
    assert served.resolve(served.model.adapter) == folder
    bot = Bot(served)
    reply = bot.reply([{"role": "user", "content": "Question 3 about returns for order 1003"}])
    assert reply.passages and reply.passages[0].source == "returns.md"  # retrieval paths still resolve


def test_existing_adapter_is_not_overwritten_by_accident(workspace):
    from assistant.data import DataError
    from assistant.training.sft import train

    config = load_train_config(workspace / "train.yaml", ["training.max_steps=2", "training.eval_every=2"])
    train(config, quiet=True)
    with pytest.raises(DataError, match="exists; pass --overwrite"):
        train(config, quiet=True)
    assert train(config, quiet=True, overwrite=True).is_dir()


def test_bad_data_stops_before_the_model_loads_and_writes_nothing(workspace):
    from assistant.cli.parser import main

    with open(workspace / "train.jsonl", "a") as handle:
        handle.write('{"messages": [{"role": "assistant", "content": "hi"}]}\n')
    code = main(["train", str(workspace / "train.yaml"), "--quiet"])
    assert code == 2
    assert not (workspace / "adapters").exists() and not (workspace / "runs").exists()


def test_train_config_errors_are_reported_together(tmp_path):
    (tmp_path / "t.yaml").write_text("name: bad name\ntasks:\n  - file: missing.jsonl\n    weight: 0\n"
                                     "training:\n  validation_split: 0\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(tmp_path / "t.yaml")
    message = str(err.value)
    for expected in ("missing.jsonl does not exist", "weight: must be above 0", "validation_split above 0",
                     "batch_size: must be at least 1", "name: 'bad name'"):
        assert expected in message


def test_overrides_on_the_command_line(workspace):
    from assistant.cli.train import dotted_overrides

    overrides = dotted_overrides(["--training.learning_rate", "1e-4", "--lora.r=8", "--name", "x2"])
    config = load_train_config(workspace / "train.yaml", overrides)
    assert (config.training.learning_rate, config.lora.r, config.name) == (1e-4, 8, "x2")


def test_killed_run_resumes_from_its_last_checkpoint(workspace):
    import os
    import signal
    import time

    command = [sys.executable, "-m", "assistant", "train", str(workspace / "train.yaml"), "--quiet",
               "--training.max_steps", "12", "--training.eval_every", "3"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = workspace / "runs" / "tiny-adapter" / "checkpoints"
    deadline = time.time() + 300
    elapsed = workspace / "runs" / "tiny-adapter" / "elapsed.json"
    while time.time() < deadline and not ((checkpoints / "checkpoint-3" / "trainer_state.json").exists()
                                          and elapsed.exists()):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workspace / "adapters" / "tiny-adapter").exists()  # killed runs leave no adapter
    before = json.loads(elapsed.read_text())["seconds"]  # the killed attempt's wall time, up to its checkpoint

    result = subprocess.run(command + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = workspace / "adapters" / "tiny-adapter"
    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert card["training"]["steps"] == 12
    assert card["training"]["resumed_from_step"] >= 3
    assert card["training"]["wall_seconds"] > before > 0  # the card counts the earlier attempt too
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(folder).r == 4


def test_random_sweep_keeps_only_the_best_trial(workspace, capsys):
    from assistant.cli.parser import main

    config = yaml.safe_load((workspace / "train.yaml").read_text())
    config["search"] = {"training.learning_rate": "loguniform 1e-4 3e-2", "lora.r": "choice 2 4"}
    config["training"].update(max_steps=4, eval_every=2)
    (workspace / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["sweep", str(workspace / "train.yaml"), "--search", "random", "--trials", "4", "--quiet"]) == 0
    folder = workspace / "adapters" / "tiny-adapter"
    assert [p.name for p in (workspace / "adapters").iterdir()] == ["tiny-adapter"]  # the others were removed
    assert not (workspace / "runs" / "tiny-adapter" / "sweep").exists()
    import csv

    rows = list(csv.DictReader(open(folder / "sweep.csv")))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert len({r["training.learning_rate"] for r in rows}) == 4
    card = yaml.safe_load((folder / "card.yaml").read_text())
    complete = [float(r["eval_support_loss"]) for r in rows if r["state"] == "complete"]
    assert card["metrics"]["adapter"]["eval_support_loss"] == pytest.approx(min(complete), rel=1e-4)
    assert card["sweep"]["trials"] == 4 and (folder / "sweep.png").is_file()
    assert str(card["sweep"]["best_trial"]) in capsys.readouterr().out
    from assistant.variants import load_variant

    served = load_variant(folder / "variant.yaml")
    assert served.resolve(served.context.documents) == (workspace / "docs").resolve()


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_two_process_data_parallel_run_writes_the_same_adapter_format(workspace, quantization):
    config = yaml.safe_load((workspace / "train.yaml").read_text())
    config["tasks"] = config["tasks"][:1]
    (workspace / "train.yaml").write_text(yaml.safe_dump(config))
    variant = yaml.safe_load((workspace / "variant.yaml").read_text())
    variant["model"]["quantization"] = quantization
    (workspace / "variant.yaml").write_text(yaml.safe_dump(variant))
    import socket

    with socket.socket() as probe:  # a free port for the processes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port)]
    result = subprocess.run(torchrun + ["-m", "assistant", "train", str(workspace / "train.yaml"), "--quiet",
                                        "--training.max_steps", "4", "--training.eval_every", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("adapter written to") == 1  # only the first process writes
    folder = workspace / "adapters" / "tiny-adapter"
    card = yaml.safe_load((folder / "card.yaml").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 4
    assert {"adapter_model.safetensors", "adapter_config.json", "card.yaml", "variant.yaml"} <= {p.name for p in folder.iterdir()}


class _Diverge:
    """A Trainer callback that ruins the adapter after ``from_step``: every LoRA B matrix is filled with a
    large constant after each step, so validation loss gets far worse than at the first evaluation whatever
    the CPU's kernels do. Divergence is forced, not hoped for."""

    def __init__(self, from_step: int):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                import torch

                if state.global_step >= from_step:
                    with torch.no_grad():
                        for name, param in model.named_parameters():
                            if "lora_B" in name:
                                param.fill_(3.0)

        self.callback = Callback()


def test_early_stopping_ends_a_diverging_run_and_keeps_the_best_checkpoint(workspace):
    from assistant.training.sft import train

    config = load_train_config(workspace / "train.yaml", ["training.max_steps=30", "training.eval_every=2",
                                                           "training.patience=1"])
    adapter = train(config, quiet=True, callbacks=[_Diverge(from_step=3).callback])
    card = yaml.safe_load((adapter / "card.yaml").read_text())
    assert card["training"]["steps"] == 4  # step 4's evaluation was worse than step 2's: stopped there
    assert card["training"]["best_checkpoint_step"] == 2
    # the adapter written is the best checkpoint's, not the ruined one's
    from safetensors.torch import load_file

    weights = load_file(adapter / "adapter_model.safetensors")
    assert all(not (t == 3.0).all() for name, t in weights.items() if "lora_B" in name)


def test_early_stopping_counts_only_evaluations_that_carry_its_metric():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from assistant.training.callbacks import EarlyStopping

    args = TrainingArguments(output_dir="unused", metric_for_best_model="eval_support_loss", greater_is_better=False,
                             load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps", use_cpu=True)
    stopping, state, control = EarlyStopping(2), TrainerState(), TrainerControl()
    stopping.on_train_begin(args, state, control)

    def evaluate(metrics: dict) -> bool:
        stopping.on_evaluate(args, state, control, metrics=metrics)
        value = metrics.get("eval_support_loss")  # as the Trainer does, the best is recorded after callbacks
        if value is not None and (state.best_metric is None or value < state.best_metric):
            state.best_metric = value
        return control.should_training_stop

    assert not evaluate({"eval_support_loss": 2.0})
    assert not evaluate({"eval_intent_loss": 9.0})  # another validation set's call: not counted
    assert not evaluate({"eval_support_loss": 2.5})  # one worse evaluation, patience 2
    assert not evaluate({"eval_support_loss": 1.5})  # improved: the count starts again
    assert not evaluate({"eval_support_loss": 1.6})
    assert evaluate({"eval_support_loss": 1.7})  # two worse in a row: stop


def test_resume_skips_a_checkpoint_left_half_written(tmp_path):
    from assistant.training.sft import _last_checkpoint

    for step, complete in ((3, True), (6, True), (9, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert _last_checkpoint(tmp_path).name == "checkpoint-6"
    assert _last_checkpoint(tmp_path / "missing") is None


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_from_it(workspace):
    import os
    import signal
    import time

    command = [sys.executable, "-m", "assistant", "train", str(workspace / "train.yaml"), "--quiet",
               "--training.max_steps", "200", "--training.eval_every", "100"]
    # a checkpoint on a very short time interval proves the training loop (and its Ctrl-C handler) is running
    first = [*command, "--training.checkpoint_minutes", "0.0001"]
    proc = subprocess.Popen(first, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = workspace / "runs" / "tiny-adapter" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not any(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "checkpoint" in err and "--resume" in err
    saved = [int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    assert saved and 0 < max(saved) < 200  # saved where Ctrl-C stopped it
    assert not (workspace / "adapters" / "tiny-adapter").exists()  # no adapter from an interrupted run

    result = subprocess.run(command + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    card = yaml.safe_load((workspace / "adapters" / "tiny-adapter" / "card.yaml").read_text())
    assert card["training"]["resumed_from_step"] == max(saved) and card["training"]["steps"] == 200


def test_resume_with_nothing_to_resume_says_so(workspace, capsys):
    from assistant.cli.parser import main

    code = main(["train", str(workspace / "train.yaml"), "--resume", "--quiet"])
    assert code == 2
    assert "nothing to resume from" in capsys.readouterr().err
    assert not (workspace / "adapters" / "tiny-adapter").exists()


def test_checkpoints_are_also_saved_on_a_time_interval(monkeypatch):
    from transformers import TrainerControl, TrainerState

    from assistant.training import callbacks as training

    clock = [0.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: clock[0])
    callback = training.Checkpointing(minutes=2)
    state, control = TrainerState(), TrainerControl()
    clock[0] = 60
    callback.on_step_end(None, state, control)
    assert not control.should_save
    clock[0] = 121
    callback.on_step_end(None, state, control)
    assert control.should_save
    callback.on_save(None, state, control)
    control = TrainerControl()
    clock[0] = 200
    callback.on_step_end(None, state, control)
    assert not control.should_save  # counted from the last save
    assert not training.Checkpointing(minutes=0).seconds  # 0 turns the interval off


def test_answer_only_loss_equals_the_models_own_loss_and_gradients(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from assistant.generate import IGNORE
    from assistant.training.sft import answer_only_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.randint(3, model.config.vocab_size, (3, 12))
    labels = torch.full_like(ids, IGNORE)
    labels[0, 9:] = ids[0, 9:]  # answers of different lengths at different places, as after padding
    labels[1, 4:7] = ids[1, 4:7]
    labels[2, 11:] = ids[2, 11:]
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for counted in (None, 17):  # the batch's own count, or the Trainer's count over gradient accumulation
        extra = {} if counted is None else {"num_items_in_batch": counted}
        model.zero_grad()
        full = model(**inputs, **extra).loss
        full.backward()
        expected = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        mine, outputs = answer_only_loss(model, inputs, counted)
        mine.backward()
        assert torch.allclose(mine, full, atol=1e-6)
        assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(model.parameters(), expected))
        assert outputs.logits.shape[1] == 6  # positions 3..5, 8..10 predict labelled tokens: not all 11


def test_over_length_examples_are_refused_or_cut_in_the_users_message(workspace):
    from assistant.generate import IGNORE
    from assistant.training.data import fitted, serving_variant

    bot = Bot(serving_variant(load_train_config(workspace / "train.yaml")))
    words = [f"w{i}" for i in range(60)]
    history = [{"role": "user", "content": " ".join(words)}]
    ids, whole = bot.encode(history, "Refunds take 5 days.")
    answer_tokens = sum(x != IGNORE for x in whole)
    limit = len(ids) - 60
    assert len(fitted(bot, history, "Refunds take 5 days.", limit, "refuse")[0]) == len(ids)
    assert fitted(bot, history, "Refunds take 5 days.", 10, "user_left") is None  # nothing short enough fits
    too_long = [{"role": "user", "content": " ".join(f"x{i}" for i in range(400))}]  # over the context window
    assert len(fitted(bot, too_long, "Refunds take 5 days.", limit, "user_left")[0]) <= limit
    for mode in ("user_left", "user_middle"):
        cut, labels = fitted(bot, history, "Refunds take 5 days.", limit, mode)
        assert limit - 8 <= len(cut) <= limit  # the longest cut that fits, to within a word
        text = bot.tokenizer.decode(cut)
        assert "Refunds take 5 days." in text and "w59" in text  # the answer and the message's end stay
        assert ("w0 " in text) == (mode == "user_middle") and ("…" in text) == (mode == "user_middle")
        assert sum(x != IGNORE for x in labels) == answer_tokens  # the answer is learned whole
    with pytest.raises(Exception, match="training.truncate: user_middle or user_left"):
        from assistant.training.data import prepare_data

        config = load_train_config(workspace / "train.yaml", ["training.max_seq_len=40"])
        prepare_data(config, serving_variant(config))


def test_balance_repeats_rarer_labels_up_to_the_most_frequent():
    from assistant.data import describe_labels
    from assistant.training.data import Example, balanced

    labels = ["neutral"] * 2 + ["positive"] * 7 + ["negative"] * 4
    examples = [Example([i], [i], "sentiment", f"f:{i}") for i in range(len(labels))]
    out = balanced(examples, labels, seed=0)
    by_label = {label: [e for e in out if labels[e.input_ids[0]] == label] for label in set(labels)}
    assert {label: len(group) for label, group in by_label.items()} == {"neutral": 7, "positive": 7, "negative": 7}
    assert {e.input_ids[0] for e in out} == set(range(len(labels)))  # every original example is kept
    assert balanced(examples, labels, seed=0) == out  # seeded

    lines = describe_labels("sentiment", {"positive": 7, "negative": 4, "neutral": 2})
    assert lines[0] == "sentiment: positive 7 (54%), negative 4 (31%), neutral 2 (15%)"
    assert "imbalanced" in lines[1] and "'neutral'" in lines[1] and "balance: true" in lines[1]
    assert len(describe_labels("intent", {"a": 5, "b": 4, "c": 3})) == 1  # within 3x: no warning


def test_a_run_whose_predictions_collapse_onto_one_label_says_so():
    from types import SimpleNamespace

    import torch

    from assistant.generate import IGNORE
    from assistant.training.config import TaskSettings, TrainConfig
    from assistant.training.data import Example, PreparedData
    from assistant.training.sft import label_predictions

    names = {5: "negative", 6: "neutral", 7: "positive"}

    def example(label_token: int) -> Example:  # a 3-token prompt, then the label's one token and end of turn
        return Example([1, 2, 3, label_token, 9], [IGNORE] * 3 + [label_token, 9], "sentiment", "f:1")

    class Model:  # finds one label likeliest whatever the prompt: a collapsed classifier
        device = "cpu"

        def __init__(self, favourite: int):
            self.favourite = favourite

        def eval(self):
            return self

        def __call__(self, input_ids):
            logits = torch.zeros(*input_ids.shape, 10)
            logits[..., self.favourite] = 5.0
            return SimpleNamespace(logits=logits)

    tokenizer = SimpleNamespace(decode=lambda ids, skip_special_tokens: names.get(ids[0], "?"))
    config = TrainConfig(tasks=[TaskSettings(name="sentiment", kind="label")])
    validation = [example(t) for t in [5] * 4 + [6] * 1 + [7] * 5]
    data = PreparedData([example(t) for t in (5, 6, 7)], {"sentiment": validation}, [], {}, None)
    found = label_predictions(Model(6), data, config, tokenizer)["sentiment"]
    assert found == {"predicted": {"neutral": 10}, "true": {"negative": 4, "neutral": 1, "positive": 5},
                     "collapsed": True, "onto": "neutral"}
    mostly_positive = PreparedData(data.train, {"sentiment": [example(t) for t in [5, 6, 7] + [7] * 7]}, [], {}, None)
    found = label_predictions(Model(7), mostly_positive, config, tokenizer)["sentiment"]
    assert found["predicted"] == {"positive": 10} and not found["collapsed"]  # 80% of the labels are positive


def test_gradient_checkpointing_gives_the_same_loss_and_adapter_gradients(workspace):
    import torch

    from assistant.training.data import prepare_data, serving_variant
    from assistant.training.sft import PadToLongest, answer_only_loss, build_model

    grads = {}
    for checkpointing in (False, True):
        config = load_train_config(workspace / "train.yaml", [f"training.gradient_checkpointing={checkpointing}"])
        variant = serving_variant(config)
        examples = prepare_data(config, variant).train[:4]
        base, model = build_model(config, variant)
        assert model.base_model.model.is_activation_checkpointing is checkpointing
        batch = PadToLongest(base.tokenizer.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels}
                                                            for e in examples])
        loss, _ = answer_only_loss(model, batch)
        loss.backward()
        grads[checkpointing] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                if p.requires_grad})
    (plain_loss, plain), (ckpt_loss, ckpt) = grads[False], grads[True]
    assert torch.allclose(plain_loss, ckpt_loss, atol=1e-6)
    assert plain.keys() == ckpt.keys() and any(g.abs().sum() > 0 for g in plain.values())
    assert all(torch.allclose(plain[n], ckpt[n], atol=1e-6) for n in plain)
