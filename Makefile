# edge-asr: every target installs what it needs first (Debian packages via apt, Python
# packages into .venv), so a fresh machine needs nothing but `make run` and `make test`.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
DATA    ?= $(HOME)/.cache/edge-asr
MODEL   ?= models/rnnt-v1
APT_PKGS := espeak-ng flite festival festvox-us-slt-hts festvox-kdlpc16k libsndfile1 libportaudio2 sox pulseaudio pulseaudio-utils libasound2-plugins

.PHONY: run test train eval bench lint proto system-deps clean-venv

# System packages: TTS engines for the recipe and tests (festival for --more-voices),
# PortAudio for microphones, and PulseAudio with the ALSA pulse plugin for the virtual
# microphone in tests/test_microphone.py.
$(VENV)/.system-deps: Makefile
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

# torch==2.13.0 is pinned because a CPU build of it is on this machine class's disk; a bare
# `torch` would fetch a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(VENV)/.system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev,sim]'
	@touch $@

system-deps: $(VENV)/.system-deps

run: $(VENV)/.installed
	$(VENV)/bin/edge-asr demo --model $(MODEL)

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Python modules from protos/*.proto into daemon/_generated/ (gitignored). The daemon also
# does this on first import; packagers run it before building a wheel.
proto: $(VENV)/.installed
	$(PY) -m edge_asr.daemon.proto --force

# The recipe from nothing: corpus, TTS, training (3 epochs, about 2 hours on 2 cores),
# export, model card. The shipped rnnt-v1 is this followed by continuations (train-more).
train: $(VENV)/.installed
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out $(MODEL)

# Continues training the model in $(MODEL) for $(EPOCHS) more epochs on one thread (the
# learning-rate schedule restarts), then exports over it and rewrites its card. How the
# shipped rnnt-v1 got its later epochs; about 35 minutes an epoch here. The training folder
# is named after the starting model's card, so an interrupted run resumes where it was and
# the next continuation starts a new one.
EPOCHS ?= 3
.PHONY: train-more
train-more: $(VENV)/.installed
	@test -f $(MODEL)/model_card.json || { echo "$(MODEL) has no model card (a run stopped \
	between export and evaluate?): python -m edge_asr.models.recipe --data $(DATA) --out \
	$(MODEL) --exp <its training folder> --until evaluate"; exit 1; }
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out $(MODEL) --init-from $(MODEL) \
	    --epochs $(EPOCHS) --threads 1 --until evaluate \
	    --exp $(DATA)/exp-more-$$(sha256sum $(MODEL)/model_card.json | cut -c1-12)

# The cloud's language models (n-gram + LSTM, issue 4): corpus text in $(DATA)/cloud_lm,
# models and their card in models/cloud-lm, which is committed (pruned 4-gram, int8 LSTM:
# about 3 MB), so `make run` needs no build. About 6 minutes on one core.
.PHONY: cloud-lm
cloud-lm: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m edge_asr.simulator.lm_recipe --data $(DATA)/cloud_lm --out models/cloud-lm

# Scores the shipped model on every evaluation set the recipe rendered.
eval: $(VENV)/.installed
	@for s in test_voices test_sentences test_names test_snr10 test_band8k; do \
	  echo "== $$s"; \
	  $(VENV)/bin/edge-asr eval $(DATA)/manifests/$$s.jsonl --model $(MODEL) \
	    --output $(DATA)/results/$$s.jsonl || exit 1; \
	done
	@# Biasing with phone-book-long lists: each utterance's context grown to 400 contacts and
	@# 150 devices (models/long_context.py), scored with and without it.
	@for s in test_names test_sentences; do \
	  $(PY) -m edge_asr.models.long_context $(DATA)/manifests/$$s.jsonl \
	    $(DATA)/manifests/$${s}_long.jsonl --contacts 400 --devices 150 || exit 1; \
	  for c in "" --no-context; do \
	    echo "== $${s}_long $$c"; \
	    $(VENV)/bin/edge-asr eval $(DATA)/manifests/$${s}_long.jsonl --model $(MODEL) $$c \
	      --output $(DATA)/results/$${s}_long$$c.jsonl || exit 1; \
	  done; \
	done

# Every bundled scenario (simulator/scenarios) against a real daemon and cloud; a report per
# scenario in sim-reports/NAME/report.md. About 12 minutes: two scenarios play in real time.
.PHONY: sim
sim: $(VENV)/.installed
	@for s in quiet_kitchen noisy_party music_playing flaky_wifi offline; do \
	  $(VENV)/bin/edge-asr sim run $$s --out sim-reports/$$s || exit 1; \
	done
	$(VENV)/bin/edge-asr sim table sim-reports/*

# The cloud bench first: it needs only the committed cloud LM, not an acoustic model.
bench: $(VENV)/.installed
	$(PY) bench/cloud.py --lm models/cloud-lm
	$(PY) bench/rtf.py --model $(MODEL) $(foreach m,$(wildcard $(MODEL)-int*/model_card.json),--model $(dir $(m)))
	$(PY) bench/daemon.py --model $(MODEL)
	$(PY) bench/peers.py --model $(MODEL)

clean-venv:
	rm -rf $(VENV)
