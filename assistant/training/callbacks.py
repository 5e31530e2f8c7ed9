"""Trainer callbacks of a training run: portable TensorBoard logs, early stopping on the first task,
checkpoints on a time interval and on Ctrl-C, a guard against repacked 4-bit layers, and the progress bar.
(Imported only by the train verbs: it loads transformers at import.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.integrations import TensorBoardCallback


class PortableTensorBoard(TensorBoardCallback):
    """TensorBoard logging whose recorded settings carry no path of this machine: the training arguments
    are logged with folders relative to the runs folder, and the model config (which names the cache folder
    the base was loaded from) is not logged. The logs are copied into the adapter folder, which is shared."""

    def __init__(self, runs: Path):
        super().__init__()
        self.runs = runs

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args)
        if self.tb_writer is not None:
            settings = json.loads(args.to_json_string())
            settings["output_dir"] = os.path.relpath(args.output_dir, self.runs)
            self.tb_writer.add_text("args", json.dumps(settings, indent=2, sort_keys=True))


class EarlyStopping(EarlyStoppingCallback):
    """Early stopping on the first task's validation loss. With several validation sets (and the test
    set) the Trainer reports each in its own evaluation call; only the one with the metric counts."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and args.metric_for_best_model in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)


class Checkpointing(TrainerCallback):
    """Saves a checkpoint every ``minutes`` of wall time (besides the one at each evaluation), and on Ctrl-C:
    the first SIGINT lets the current step finish, saves a checkpoint and stops the run; a second one
    interrupts at once. ``interrupted`` tells the caller not to publish the adapter."""

    def __init__(self, minutes: float, on_checkpoint=None):
        self.seconds = minutes * 60
        self.last = time.monotonic()
        self.interrupted = False
        self._previous = None
        self.on_checkpoint = on_checkpoint
        """Called after every checkpoint saved (the run records its wall time so far, for a resume)."""

    def on_train_begin(self, args, state, control, **kwargs):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum, frame):
        import signal

        self.interrupted = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a second Ctrl-C: at once
        print("\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        elif self.seconds and time.monotonic() - self.last >= self.seconds:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()
        if self.on_checkpoint:
            self.on_checkpoint()

    def on_train_end(self, args, state, control, **kwargs):
        import signal
        import threading

        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)


class RepackGuard(TrainerCallback):
    """Fails loudly if any 4-bit layer is in the CPU inference packing while training (see
    ``models.disable_cpu_4bit_repacking``): its gradients would be silently dropped."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        from assistant.models.loading import repacked_4bit_layers

        packed = repacked_4bit_layers(model)
        if packed:
            raise RuntimeError(f"{len(packed)} 4-bit layers were repacked for CPU inference (e.g. {packed[0]}); "
                               "gradients through them would be dropped")


class LossProgress(TrainerCallback):
    """One progress bar over optimizer steps showing loss, validation loss, tokens/s and the ETA."""

    def __init__(self):
        self.bar = None
        self.started = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                        dynamic_ncols=True)
        self.started = (time.time(), state.num_input_tokens_seen or 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        seconds = time.time() - self.started[0]
        tokens = (state.num_input_tokens_seen or 0) - self.started[1]
        if seconds > 0 and tokens:
            self.postfix["tok/s"] = f"{tokens / seconds:.0f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key == "loss" or (key.startswith("eval_") and key.endswith("_loss")):
                self.postfix[key.replace("eval_", "val_")] = f"{value:.3f}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
