"""The pairwise judge: a model (a local variant or an OpenAI-compatible endpoint) says which of two answers
is better, asked in both orders; verdicts are cached like answers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable

from assistant.evaluation.answers import AnswerCache, VariantRun
from assistant.evaluation.suite import JudgeSettings, Suite

JUDGE_PROMPT = """You are judging two answers to the same customer message. Pick the answer that is more \
helpful, correct and specific. Reply with a single letter: A or B.

Customer message:
{question}

Answer A:
{a}

Answer B:
{b}

Which answer is better, A or B?"""


def _verdict(text: str) -> str | None:
    match = re.search(r"\b([AB])\b", text.strip().upper())
    return match.group(1) if match else None


class Judge:
    """Asks a model which of two answers is better: a local variant or an OpenAI-compatible endpoint."""

    def __init__(self, settings: JudgeSettings, cache: AnswerCache | None):
        self.settings = settings
        self.cache = cache
        self._bot = None

    def ask(self, question: str, a: str, b: str) -> str | None:
        prompt = JUDGE_PROMPT.format(question=question, a=a, b=b)
        key = hashlib.sha256(f"{self.settings.identity()}\x00{prompt}".encode()).hexdigest()[:16]
        if self.cache:
            hit = self.cache.get("judge", "verdicts", key)
            if hit is not None:
                return hit["verdict"]
        text = self._complete(prompt)
        verdict = _verdict(text)
        if self.cache:
            self.cache.put("judge", "verdicts", key, {"verdict": verdict, "text": text})
        return verdict

    def _complete(self, prompt: str) -> str:
        if self.settings.variant is not None:
            from assistant.generate import Bot

            if self._bot is None:
                v = self.settings.variant.variant
                judge_variant = dataclasses.replace(
                    v, context=dataclasses.replace(v.context, documents=None),
                    generation=dataclasses.replace(v.generation, max_new_tokens=4, temperature=0.0))
                self._bot = Bot(judge_variant)
            return self._bot.reply_batch([[{"role": "user", "content": prompt}]], batch_size=1)[0].text
        return openai_chat(self.settings.endpoint, self.settings.model, prompt,
                           os.environ.get(self.settings.api_key_env, ""))

    def compare(self, question: str, x: str, y: str) -> float:
        """1.0 when x wins both orders, 0.0 when y does, 0.5 otherwise (a tie or an order-biased judge)."""
        first = self.ask(question, x, y)
        second = self.ask(question, y, x)
        x_votes = (first == "A") + (second == "B")
        y_votes = (first == "B") + (second == "A")
        if x_votes == 2:
            return 1.0
        if y_votes == 2:
            return 0.0
        return 0.5


def openai_chat(endpoint: str, model: str, prompt: str, api_key: str = "", timeout: float = 120) -> str:
    """One non-streaming chat completion from an OpenAI-compatible server."""
    import urllib.request

    url = endpoint.rstrip("/") + ("/chat/completions" if endpoint.rstrip("/").endswith("/v1") else "/v1/chat/completions")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                       "max_tokens": 4}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = json.loads(response.read())
    return data["choices"][0]["message"]["content"] or ""


def judge_runs(suite: Suite, runs: dict[str, VariantRun], cache: AnswerCache | None,
               progress: Callable[[int], None] = lambda n: None) -> dict[str, dict[str, Any]]:
    """Each variant against the baseline, by the judge: win rate and length-controlled win rate."""
    from assistant.stats import bootstrap_ci, length_controlled_win_rate, mean_of

    judge = Judge(suite.judge, cache)
    baseline = runs[suite.judge.baseline]
    results = {}
    for name, run in runs.items():
        if name == baseline.name:
            continue
        outcomes, deltas = [], []
        for case, mine, theirs in zip(suite.cases, run.records, baseline.records):
            question = case.messages[-1]["content"]
            outcomes.append(judge.compare(question, mine.answer, theirs.answer))
            deltas.append(len(mine.answer.split()) - len(theirs.answer.split()))
            progress(1)
        results[name] = {
            "against": baseline.name,
            "win_rate": bootstrap_ci(mean_of(outcomes), len(outcomes), suite.bootstrap_rounds),
            "length_controlled_win_rate": length_controlled_win_rate(outcomes, deltas),
            "wins": sum(o == 1.0 for o in outcomes),
            "ties": sum(o == 0.5 for o in outcomes),
            "losses": sum(o == 0.0 for o in outcomes),
            "outcomes": outcomes,
        }
    return results
