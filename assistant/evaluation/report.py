"""The evaluation report: what people read, what scripts read, and what the app serves.

    eval/reports/<suite>-<timestamp>/
        report.md       headline table, significance of every difference, cost, a few answers
        report.html     the same, self-contained (chart inlined), with every case's answers side by side
        metrics.png     each metric per variant with 95% confidence intervals
        cost.png        quality against each cost (first token, decode time, training), frontier drawn
        results.jsonl   one row per (case, variant): answer, reference, per-case scores
        summary.json    every variant's metrics, wrong facts and cost, and every paired comparison (for programs)
        winner.yaml     the winning variant, complete, with paths relative to this folder

The folder is built under a temporary name and renamed into place, so a report is never half-written.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from assistant.artifacts import publish_atomically, write_json
from assistant.config import portable_variant
from assistant.evaluation.fact_loss import fact_loss_section, plot_fact_loss
from assistant.evaluation.probe import probe_markdown
from assistant.evaluation.run import SuiteResult
from assistant.evaluation.scoring import FACT_ERRORS, extract_label
from assistant.evaluation.suite import LABEL_METRICS

METRIC_TITLES = {
    "rouge_l": "ROUGE-L",
    "chrf": "chrF",
    "bleu": "BLEU",
    "exact_match": "Exact match",
    "semantic_similarity": "Semantic sim.",
    "perplexity": "Ref. perplexity",
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "key_facts": "Key-fact recall",
    "grounding": "Grounding",
    "context_recall": "Context recall",
    "citations": "Citation precision",
    "abstention": "Abstention (right decisions)",
}


def _title(metric: str) -> str:
    return METRIC_TITLES.get(metric, metric)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _finite(value: float) -> float | None:
    """A score for JSON: None where a case has no value (a fact metric on a case without facts)."""
    return value if math.isfinite(value) else None


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _direction(metric: str) -> str:
    from assistant.metrics import HIGHER_IS_BETTER

    return "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"


# -- tables -----------------------------------------------------------------------------------------------


def headline_rows(result: SuiteResult) -> tuple[list[str], list[list[str]]]:
    suite = result.suite
    header = ["Variant"] + [_title(m) for m in suite.metrics] + ["Engine", "Tokens/s", "First token", "Peak memory",
                                                                  "Answer tokens"]
    rows = []
    for name in result.ranking:
        run = result.runs[name]
        cells = [f"**{name}**" if name == result.winner else name]
        for metric in suite.metrics:
            e = result.scores[name][metric].estimate
            cells.append(f"{_fmt(e.value)} [{_fmt(e.low)}, {_fmt(e.high)}]")
        cost = run.cost
        cells += [
            cost.get("engine", "transformers"),
            _fmt(cost.get("tokens_per_second", math.nan), 1),
            f"{_fmt(cost.get('first_token_seconds', math.nan) * 1000, 0)} ms",
            f"{cost.get('peak_memory_bytes', 0) / 2**20:,.0f} MiB",
            _fmt(cost.get("answer_tokens_mean", math.nan), 1),
        ]
        rows.append(cells)
    return header, rows


def comparison_rows(result: SuiteResult, metric: str) -> list[list[str]]:
    """Every pair of variants on one metric: difference, interval, p-values, wins/ties/losses."""
    rows = []
    for (a, b), c in result.comparisons[metric].items():
        verdict = "significant" if c.significant else "not significant"
        if not c.significant and c.cases_needed:
            verdict += f"; ~{c.cases_needed} cases needed"
        elif not c.significant:
            verdict += "; identical"
        if c.tests_disagree:
            verdict += f"; **the sign test disagrees** (p = {_p(c.sign_p_value)}): read the cases before trusting it"
        rows.append([f"{a} vs {b}", f"{c.difference.value:+.3f} [{c.difference.low:+.3f}, {c.difference.high:+.3f}]",
                     _p(c.p_value), _p(c.sign_p_value), f"{c.wins}/{c.ties}/{c.losses}", verdict])
    return rows


COMPARISON_HEADER = ["Pair (A vs B)", "A − B [95% CI]", "p (paired bootstrap)", "p (sign test)", "A wins/ties/losses", "Verdict"]


def winner_sentence(result: SuiteResult) -> str:
    suite = result.suite
    if len(result.ranking) < 2:
        return f"Only one variant was evaluated: **{result.winner}**."
    if result.winner != result.ranking[0]:
        best = result.ranking[0]
        pair = (best, result.winner) if (best, result.winner) in result.comparisons[suite.primary] else (result.winner, best)
        c = result.comparisons[suite.primary][pair]
        gap = c.difference.value if pair[0] == best else -c.difference.value
        return (f"**{result.winner}** wins within the cost budget ({suite.budget.describe()}). {best} ranks first on "
                f"{_title(suite.primary)} ({gap:+.3f}, {'significant' if c.significant else 'not significant'}, "
                f"p = {_p(c.p_value)}) but misses the budget: {'; '.join(suite.budget.misses(result.costs[best]))}.")
    first, second = result.ranking[:2]
    pair = (first, second) if (first, second) in result.comparisons[suite.primary] else (second, first)
    c = result.comparisons[suite.primary][pair]
    gap = c.difference.value if pair[0] == first else -c.difference.value
    text = (f"**{first}** wins on {_title(suite.primary)} ({_direction(suite.primary)}), "
            f"{gap:+.3f} against the runner-up {second}")
    if c.significant:
        return text + f"; the difference is significant (paired bootstrap p = {_p(c.p_value)})."
    needed = f" About {c.cases_needed} cases would be needed to tell a difference this size apart." if c.cases_needed else ""
    return (text + f". **This difference is not significant** (p = {_p(c.p_value)}, {c.cases} cases): "
            f"treat the two as tied on this suite.{needed}")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str, tag: str) -> str:
        escaped = html.escape(text)
        if escaped.startswith("**") and escaped.endswith("**"):
            escaped = f"<b>{escaped[2:-2]}</b>"
        return f"<{tag}>{escaped}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- chart ------------------------------------------------------------------------------------------------


def plot_metrics(result: SuiteResult, path: Path) -> None:
    """One panel per metric: a bar per variant with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result.suite.metrics
    names = result.ranking
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 0.5 + 0.45 * len(names) * rows + 0.9 * rows),
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics):
        estimates = [result.scores[n][metric].estimate for n in names]
        values = [e.value for e in estimates]
        errors = [[max(0.0, e.value - e.low) for e in estimates], [max(0.0, e.high - e.value) for e in estimates]]
        ax.barh(range(len(names)), values, xerr=errors, capsize=3,
                color=[colours[i % len(colours)] for i in range(len(names))])
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{_title(metric)} ({_direction(metric)})", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"{result.suite.name}: {len(result.suite.cases)} cases, 95% bootstrap intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- writing ----------------------------------------------------------------------------------------------


def results_rows(result: SuiteResult) -> list[dict[str, Any]]:
    rows = []
    for name, run in result.runs.items():
        for i, (case, record) in enumerate(zip(result.suite.cases, run.records)):
            row = {
                "case": case.id,
                "variant": name,
                "variant_hash": run.variant_hash,
                "engine": run.engine,
                "weights": run.weights,
                "question": case.messages[-1]["content"],
                "reference": case.reference,
                "answer": record.answer,
                "new_tokens": record.new_tokens,
                "prompt_tokens": record.prompt_tokens,
                "passages": record.passages,
                "passage_texts": record.passage_texts,
                "tags": case.tags,
                **({"source": case.source} if case.source else {}),
                "scores": {m: _finite(result.scores[name][m].per_case[i]) for m in result.suite.metrics},
            }
            if case.label is not None:
                row["label"] = case.label
                row["predicted_label"] = extract_label(record.answer, result.suite.labels)
            rows.append(row)
    return rows


def write_report(result: SuiteResult, reports: Path | None = None, now: float | None = None) -> Path:
    """Writes the report folder and returns its path."""
    suite = result.suite
    reports = reports or suite.reports
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    destination = reports / f"{suite.name}-{stamp}"

    def build(staging: Path) -> None:
        plot_metrics(result, staging / "metrics.png")
        plot_cost(result, staging / "cost.png")
        plot_fact_loss(result, staging / "fact_loss.png")
        rows = results_rows(result)
        with open(staging / "results.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (staging / "report.md").write_text(render_markdown(result, stamp), encoding="utf-8")
        (staging / "report.html").write_text(render_html(result, stamp, rows, staging / "metrics.png"), encoding="utf-8")
        write_winner(result, staging / "winner.yaml", destination, stamp)
        write_json(staging / "summary.json", summary(result, stamp))

    return publish_atomically(destination, build, replace=True)


def summary(result: SuiteResult, stamp: str) -> dict[str, Any]:
    """The report's numbers for programs (the promotion gate): every variant's metrics with intervals, its
    wrong facts per answer, its cost, and every paired comparison, with the cases they were computed on."""
    from assistant.evaluation.scoring import FACT_ERRORS

    def interval(e) -> dict[str, float | None]:
        return {"value": _finite(e.value), "low": _finite(e.low), "high": _finite(e.high)}

    suite = result.suite
    variants = {}
    for name in result.ranking:
        scores = result.scores[name]
        variants[name] = {
            "variant_hash": result.runs[name].variant_hash, "engine": result.runs[name].engine,
            "metrics": {m: interval(scores[m].estimate) for m in suite.metrics},
            "errors_per_answer": {FACT_ERRORS[m]: interval(scores[m].extra["errors_per_answer"])
                                  for m in suite.metrics if m in FACT_ERRORS},
            "cost": {k: _finite(v) for k, v in dataclasses.asdict(result.costs[name]).items()} if result.costs else {},
        }
    comparisons = {metric: [{"a": a, "b": b, "difference": interval(c.difference), "p_value": c.p_value,
                             "significant": c.significant, "cases": c.cases} for (a, b), c in pairs.items()]
                   for metric, pairs in result.comparisons.items()}
    return {"suite": suite.name, "created": stamp, "primary": suite.primary, "winner": result.winner,
            "cases": [case.id for case in suite.cases], "variants": variants, "comparisons": comparisons}


def write_winner(result: SuiteResult, path: Path, final_folder: Path, stamp: str) -> None:
    import yaml

    suite = result.suite
    run = result.runs[result.winner]
    estimate = result.scores[result.winner][suite.primary].estimate
    data = {
        "suite": suite.name,
        "created": stamp,
        "serve": suite.serve,
        "metric": suite.primary,
        "value": round(estimate.value, 4),
        "interval": [round(estimate.low, 4), round(estimate.high, 4)],
        "cases": len(suite.cases),
        "ranking": result.ranking,
        "summary": winner_sentence(result).replace("**", ""),
        "budget": {f: v for f, v in dataclasses.asdict(suite.budget).items() if v is not None} if suite.budget else {},
        "variant_hash": run.variant_hash,
        "variant_parts": run.variant.hash_parts(),
        "engine": run.engine,
        # paths relative to the report folder the file ends up in (it is written under a temporary name)
        "variant": portable_variant(run.variant, final_folder),
        # every variant evaluated, best first: what the app's arena lets people compare blind
        "contenders": {name: portable_variant(result.runs[name].variant, final_folder) for name in result.ranking},
    }
    header = (f"# Winner of suite {suite.name} ({stamp}). The app serves the newest winner by default, or this one\n"
              f"# with: python app.py --variant <path to>/{final_folder.name}/winner.yaml\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")


# -- markdown and HTML ------------------------------------------------------------------------------------


def _notes(result: SuiteResult) -> list[str]:
    suite = result.suite
    notes = [
        f"{len(suite.cases)} cases from `{suite.cases_file.name}`"
        + (f" (only the first {suite.limit}: a quick look, not a verdict)" if suite.limit else "")
        + f"; {len(result.runs)} variants; every interval is a 95% bootstrap interval over cases "
          f"({suite.bootstrap_rounds} resamples). Differences are paired: both variants answered the same cases.",
        "ROUGE-L, chrF, BLEU, exact match and semantic similarity are means of per-case scores; reference "
        "perplexity is the corpus perplexity of the reference answers under each variant (lower is better); "
        "macro-F1 is recomputed on every resample.",
        "Decision rule: a difference is significant when its two-sided paired-bootstrap p-value is below 0.05. "
        "The exact sign test on per-case wins and losses is shown beside it; where the two fall on different "
        "sides of 0.05 the verdict says so, since the difference then rests on a few large cases or many tiny ones.",
        "Cost: tokens/s is batched generation throughput (batch of "
        f"{suite.batch_size}); first token is the median over {suite.cost_probe} streamed answers; peak memory "
        "is the process's peak while that variant generated (CUDA: peak allocation). Cached answers keep the "
        "cost measured when they were generated.",
    ]
    return notes


def render_markdown(result: SuiteResult, stamp: str) -> str:
    suite = result.suite
    out = [f"# Evaluation: {suite.name}", "", f"Run {stamp}, {result.seconds:.0f} s. {winner_sentence(result)}", ""]
    header, rows = headline_rows(result)
    out += ["## Results", "", _markdown_table(header, rows), "", "![metrics](metrics.png)", ""]
    out += [f"- {n}" for n in _notes(result)] + [""]
    out += [f"## Which differences are significant ({_title(suite.primary)}, the primary metric)", "",
            _markdown_table(COMPARISON_HEADER, comparison_rows(result, suite.primary)), ""]
    for metric in suite.metrics:
        if metric != suite.primary:
            out += [f"### {_title(metric)}", "", _markdown_table(COMPARISON_HEADER, comparison_rows(result, metric)), ""]
    if any(m in LABEL_METRICS for m in suite.metrics):
        out += ["## Predicted labels", "", "How often each variant answered with each label (the first label its "
                "answer names; '(none)' when it names none), against the reference labels.", "",
                _markdown_table(*label_table(result)), ""]
    out += facts_section(result)
    out += fact_loss_section(result)
    out += abstention_section(result)
    out += cost_section(result)
    out += probe_markdown(result.probe, result.ranking)
    if result.judged:
        out += ["## Judge", "", _markdown_table(*judge_table(result)), "",
                "The judge saw each pair twice with the order swapped; a pair counts as a win only when both "
                "orders agree, otherwise as a tie. The length-controlled win rate is the predicted win rate at "
                "equal answer length (logistic fit on the length difference).", ""]
    out += ["## Variants", ""]
    for name in result.ranking:
        run = result.runs[name]
        v = run.variant
        out.append(f"- **{name}** `{run.variant_hash}`: template `{v.prompt.template}`, "
                   f"retrieval {'`' + v.context.retriever + '` top ' + str(v.context.top_k) if v.context.documents else 'off'}, "
                   f"adapter {'`' + v.resolve(v.model.adapter).name + '`' if v.model.adapter else 'none'}, "
                   f"few-shot {v.prompt.few_shot_count if v.prompt.few_shot else 0}, base `{v.model.base}` "
                   f"({v.model.quantization}), max {v.generation.max_new_tokens} new tokens; "
                   f"answered on {run.engine}, {run.cached}/{len(suite.cases)} answers from cache")
    out += ["", "## Examples", "", "The first five cases; every case is in `report.html` and `results.jsonl`.", ""]
    for i, case in enumerate(suite.cases[:5]):
        out += [f"**{case.id}** — {case.messages[-1]['content']}", "", f"- *reference*: {case.reference}"]
        for name in result.ranking:
            answer = result.runs[name].records[i].answer.replace("\n", " ")
            out.append(f"- *{name}* ({_title(suite.primary)} {result.scores[name][suite.primary].per_case[i]:.2f}): {answer}")
        out.append("")
    return "\n".join(out)


def facts_section(result: SuiteResult) -> list[str]:
    """Markdown lines on facts (when the suite measures them): stated, contradicted, supported and invented
    facts per variant with 95% intervals, then the answers with the most wrong facts."""
    present = [m for m in FACT_ERRORS if m in result.suite.metrics]
    if not present:
        return []

    def ci(estimate) -> str:
        return f"{estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]"

    header = ["Variant"] + [title for m in present for title in
                            ((_title(m), f"{FACT_ERRORS[m]} facts per answer"))]
    rows = [[name] + [cell for m in present for cell in
                      (ci(result.scores[name][m].estimate), ci(result.scores[name][m].extra["errors_per_answer"]))]
            for name in result.ranking]
    worst = sorted(((result.scores[name][m].extra[FACT_ERRORS[m]][i], FACT_ERRORS[m], name, i)
                    for m in present for name in result.ranking for i in range(len(result.suite.cases))),
                   key=lambda row: -row[0])
    lines = ["## Facts", "", "Checkable facts (amounts, percentages, durations, dates, numbers with units, codes, "
             "names, a leading yes or no): key-fact recall is the share of the reference's facts an answer states; "
             "contradicted facts are the reference's facts it states with another value; grounding is the share of "
             "the answer's own facts found in the prompt it was shown (passages included); unsupported facts are "
             "the rest. Intervals: 95% bootstrap over cases.", "", _markdown_table(header, rows), "",
             "Answers with the most wrong facts:", ""]
    for count, kind, name, i in [row for row in worst if row[0] > 0][:5]:
        case = result.suite.cases[i]
        answer = result.runs[name].records[i].answer.replace("\n", " ")
        lines.append(f"- {count} {kind}: **{name}** on {case.id} ({case.messages[-1]['content']!r}): {answer} "
                     f"— *reference*: {case.reference}")
    return lines + [""]


def cost_rows(result: SuiteResult) -> tuple[list[str], list[list[str]]]:
    """Quality against cost, per variant: the primary metric, what serving and training cost, whether the
    variant is on a frontier (no other variant is better on quality and cheaper on that cost), and whether
    it fits the budget."""
    from assistant.evaluation.cost import frontier

    suite, costs = result.suite, result.costs
    quality = {n: result.scores[n][suite.primary].estimate.value for n in result.ranking}
    higher = _direction(suite.primary).startswith("higher")
    fronts = {axis: frontier({n: (quality[n], value(costs[n])) for n in result.ranking}, higher)
              for axis, value in COST_AXES.items()}
    header = ["Variant", _title(suite.primary), "Decode tokens/s (1 stream)", "First token", "Tokens/s (batched)",
              "Peak memory", "Training minutes", "On the frontier of"]
    if suite.budget and suite.budget.is_set():
        header.append(f"Budget ({suite.budget.describe()})")
    rows = []
    for name in result.ranking:
        c, e = costs[name], result.scores[name][suite.primary].estimate
        row = [f"**{name}**" if name == result.winner else name, f"{_fmt(e.value)} [{_fmt(e.low)}, {_fmt(e.high)}]",
               _fmt(c.decode_tokens_per_second, 1), f"{_fmt(c.first_token_seconds, 2)} s", _fmt(c.tokens_per_second, 1),
               f"{_fmt(c.peak_memory_gib, 2)} GiB", _fmt(c.training_minutes, 1),
               ", ".join(axis for axis, names in fronts.items() if name in names) or "-"]
        if suite.budget and suite.budget.is_set():
            misses = suite.budget.misses(c)
            row.append("within" if not misses else "over: " + "; ".join(misses))
        rows.append(row)
    return header, rows


COST_AXES = {
    "first token": lambda c: c.first_token_seconds,
    "decode time": lambda c: 1 / c.decode_tokens_per_second if c.decode_tokens_per_second > 0 else math.nan,
    "training": lambda c: c.training_minutes,
}
"""The costs a frontier is drawn against (lower is cheaper): seconds to the first token, seconds per decoded
token, minutes of training."""


def cost_section(result: SuiteResult) -> list[str]:
    suite = result.suite
    lines = ["## Quality and cost", "",
             "What each variant costs: single-stream decode speed and time to the first token (median over the "
             f"{suite.cost_probe} probe cases, streamed one at a time before the batches), batched throughput, the "
             "process's peak memory while it answered, and the minutes its adapter took to train (from the "
             "adapter's card; a DPO adapter adds its SFT start's). A variant is on a frontier when no other "
             "variant is both at least as good on the primary metric and cheaper on that cost.", "",
             _markdown_table(*cost_rows(result)), "", "![quality against cost](cost.png)", ""]
    if suite.budget and suite.budget.is_set():
        best = result.ranking[0]
        if best == result.winner:
            lines += [f"The best variant on {_title(suite.primary)}, **{best}**, is within the budget "
                      f"({suite.budget.describe()}): a bigger budget would buy nothing more on this suite.", ""]
        else:
            c = result.costs[best]
            lines += [f"Within the budget ({suite.budget.describe()}) the winner is **{result.winner}**. A bigger "
                      f"budget would buy **{best}**: {_title(suite.primary)} "
                      f"{result.scores[best][suite.primary].estimate.value:.3f} against "
                      f"{result.scores[result.winner][suite.primary].estimate.value:.3f}, at "
                      f"{_fmt(c.decode_tokens_per_second, 1)} decode tokens/s, {_fmt(c.first_token_seconds, 2)} s "
                      f"to the first token and {_fmt(c.training_minutes, 1)} training minutes.", ""]
    return lines


def plot_cost(result: SuiteResult, path: Path) -> None:
    """Quality (the primary metric, with its interval) against each cost, one panel per cost, the frontier
    drawn through the variants no other beats on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from assistant.evaluation.cost import frontier

    suite, names = result.suite, result.ranking
    higher = _direction(suite.primary).startswith("higher")
    units = {"first token": "seconds to the first token", "decode time": "seconds per decoded token (1 stream)",
             "training": "training minutes"}
    fig, axes = plt.subplots(1, len(COST_AXES), figsize=(5 * len(COST_AXES), 4.2), squeeze=False)
    for ax, (axis, value) in zip(axes[0], COST_AXES.items()):
        points = {n: (result.scores[n][suite.primary].estimate.value, value(result.costs[n])) for n in names}
        front = sorted(frontier(points, higher), key=lambda n: points[n][1])
        for n in names:
            e = result.scores[n][suite.primary].estimate
            x = points[n][1]
            if not math.isfinite(x):
                continue
            ax.errorbar([x], [e.value], yerr=[[e.value - e.low], [e.high - e.value]], fmt="o", capsize=3,
                        color="tab:red" if n in front else "tab:gray")
            ax.annotate(n + (" (winner)" if n == result.winner else ""), (x, e.value), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        if len(front) > 1:
            ax.plot([points[n][1] for n in front], [points[n][0] for n in front], "--", color="tab:red", lw=1)
        ax.set_xlabel(units[axis], fontsize=8)
        ax.set_ylabel(f"{_title(suite.primary)} ({_direction(suite.primary)})", fontsize=8)
        ax.set_title(f"frontier: {axis}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{suite.name}: quality against cost (red: on the frontier)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def abstention_section(result: SuiteResult) -> list[str]:
    """How often each variant abstains where it should (cases whose reference abstains) and where it
    should not (the answerable ones), with 95% intervals."""
    if "abstention" not in result.suite.metrics:
        return []
    from assistant.stats import bootstrap_ci, mean_of

    rounds = result.suite.bootstrap_rounds
    header = ["Variant", "Right decisions", "Abstains on unanswerable cases", "Abstains on answerable cases (false)"]
    rows = []
    for name in result.ranking:
        scores = result.scores[name]["abstention"]
        abstained, expected = scores.extra["abstained"], scores.extra["expected"]
        cells = [name, _ci(scores.estimate)]
        for want in (1, 0):
            picked = [a for a, e in zip(abstained, expected) if e == want]
            cells.append(f"{_ci(bootstrap_ci(mean_of(picked), len(picked), rounds))} ({sum(picked)}/{len(picked)})"
                         if picked else "n/a")
        rows.append(cells)
    return ["## Abstention", "", "Cases whose reference answer abstains (their answer is in no document) call "
            "for the bot to say it does not know; the others call for an answer. An answer abstains when it "
            "declines for want of information (rules in `assistant/facts.py`). Intervals: 95% bootstrap.", "",
            _markdown_table(header, rows), ""]


def _ci(estimate) -> str:
    return f"{estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]"


def label_table(result: SuiteResult) -> tuple[list[str], list[list[str]]]:

    labels = result.suite.labels
    header = ["Variant"] + labels + ["(none)"]
    rows = [["reference"] + [str(sum(c.label == label for c in result.suite.cases)) for label in labels] + ["0"]]
    for name in result.ranking:
        predicted = [extract_label(r.answer, labels) for r in result.runs[name].records]
        rows.append([name] + [str(predicted.count(label)) for label in labels] + [str(predicted.count(""))])
    return header, rows


def judge_table(result: SuiteResult) -> tuple[list[str], list[list[str]]]:
    header = ["Variant", "Against", "Win rate [95% CI]", "Length-controlled win rate", "Wins/ties/losses"]
    rows = []
    for name, j in result.judged.items():
        e = j["win_rate"]
        rows.append([name, j["against"], f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]",
                     _fmt(j["length_controlled_win_rate"]), f"{j['wins']}/{j['ties']}/{j['losses']}"])
    return header, rows


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.9rem}
th,td{border:1px solid #ddd;padding:0.3rem 0.5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}
img{max-width:100%}
.case{border:1px solid #ddd;border-radius:6px;padding:0.6rem 0.8rem;margin:0.8rem 0}
.answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:0.6rem}
.answer{background:#fafafa;border-radius:4px;padding:0.4rem 0.6rem;white-space:pre-wrap;font-size:0.88rem}
.reference{background:#eef6ee}
.score{color:#666;font-size:0.8rem}
details{margin:0.3rem 0}
"""


def render_html(result: SuiteResult, stamp: str, rows: list[dict], chart: Path) -> str:
    suite = result.suite
    esc = html.escape
    image = base64.b64encode(chart.read_bytes()).decode()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation: {esc(suite.name)}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Evaluation: {esc(suite.name)}</h1>",
             f"<p>Run {esc(stamp)}, {result.seconds:.0f} s. {_bold(winner_sentence(result))}</p>",
             "<h2>Results</h2>", _html_table(*headline_rows(result)),
             f"<img alt='metrics with confidence intervals' src='data:image/png;base64,{image}'>",
             "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in _notes(result)) + "</ul>",
             f"<h2>Which differences are significant ({esc(_title(suite.primary))}, the primary metric)</h2>",
             _html_table(COMPARISON_HEADER, comparison_rows(result, suite.primary))]
    for metric in suite.metrics:
        if metric != suite.primary:
            parts += [f"<details><summary>{esc(_title(metric))}</summary>",
                      _html_table(COMPARISON_HEADER, comparison_rows(result, metric)), "</details>"]
    if any(m in LABEL_METRICS for m in suite.metrics):
        parts += ["<h2>Predicted labels</h2>", _html_table(*label_table(result))]
    cost_image = base64.b64encode((chart.parent / "cost.png").read_bytes()).decode()
    parts += ["<h2>Quality and cost</h2>", _html_table(*cost_rows(result)),
              f"<img alt='quality against cost' src='data:image/png;base64,{cost_image}'>"]
    if (chart.parent / "fact_loss.png").is_file():
        loss_image = base64.b64encode((chart.parent / "fact_loss.png").read_bytes()).decode()
        parts += ["<h2>Where the facts are lost</h2>", "<p>The full tables are in report.md.</p>",
                  f"<img alt='where the reference facts are lost' src='data:image/png;base64,{loss_image}'>"]
    if result.judged:
        parts += ["<h2>Judge</h2>", _html_table(*judge_table(result))]
    parts.append(f"<h2>Every case ({len(suite.cases)})</h2>")
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["variant"]] = row
    for case in suite.cases:
        answers = by_case[case.id]
        cells = [f"<div class='answer reference'><b>reference</b>\n{esc(case.reference)}</div>"]
        for name in result.ranking:
            row = answers[name]
            score = row["scores"][suite.primary]
            cells.append(f"<div class='answer'><b>{esc(name)}</b> <span class='score'>{esc(_title(suite.primary))} "
                         f"{_fmt(score, 2)}</span>\n{esc(row['answer'])}</div>")
        tags = f" <span class='score'>{esc(', '.join(case.tags))}</span>" if case.tags else ""
        parts.append(f"<div class='case'><b>{esc(case.id)}</b>{tags}<p>{esc(case.messages[-1]['content'])}</p>"
                     f"<div class='answers'>{''.join(cells)}</div></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _bold(text: str) -> str:
    escaped = html.escape(text)
    while "**" in escaped:
        escaped = escaped.replace("**", "<b>", 1).replace("**", "</b>", 1)
    return escaped
