# edge-asr: every target installs what it needs first (Debian packages via apt, Python
# packages into .venv), so a fresh machine needs nothing but `make run` and `make test`.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
DATA    ?= $(HOME)/.cache/edge-asr
# What run, eval and bench load: the 4-bit model. SOURCE: the fp32 that train-v4 writes.
MODEL   ?= models/rnnt-v4-int4
SOURCE  ?= models/rnnt-v4
# Recorded speech for training, each a corpus in its published layout (speechocean762,
# LibriSpeech, Common Voice, VCTK, Speech Commands, Kaldi, NeMo or Lhotse manifests); by
# default every folder or link in DATA/corpora. FSDD: the Free Spoken Digit Dataset's
# recordings folder, for evaluation only.
REAL    ?= $(wildcard $(DATA)/corpora/*)
FSDD    ?= $(DATA)/eval-corpora/free-spoken-digit-dataset/recordings
APT_PKGS := espeak-ng flite festival festvox-us-slt-hts festvox-kdlpc16k festvox-kallpc16k libsndfile1 libportaudio2 sox pulseaudio pulseaudio-utils libasound2-plugins swig libspeexdsp-dev
# More TTS engines for the recipe's fourth rendering (models/synth.py other_engine_voices):
# Debian's contrib and non-free components, which the system-deps step adds to apt's sources.
APT_CONTRIB_PKGS := mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 rhvoice rhvoice-english libttspico-utils
APT_CONTRIB_LIST := /etc/apt/sources.list.d/edge-asr-contrib.sources

.PHONY: run test train eval bench lint proto system-deps clean-venv

# System packages: TTS engines for the recipe and tests (festival for --more-voices),
# PortAudio for microphones, PulseAudio with the ALSA pulse plugin for the virtual
# microphone in tests/test_microphone.py, and swig with libspeexdsp-dev, which the speexdsp
# echo canceller builds against.
$(VENV)/.system-deps: Makefile
	@missing=""; for p in $(APT_PKGS) $(APT_CONTRIB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if ! grep -rqs "non-free" /etc/apt/sources.list /etc/apt/sources.list.d/; then \
	    . /etc/os-release; printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	      "$$VERSION_CODENAME" | $$SUDO tee $(APT_CONTRIB_LIST) >/dev/null; \
	  fi; \
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

# Python modules from protos/*.proto into daemon/api/_generated/ (gitignored). The daemon also
# does this on first import; packagers run it before building a wheel.
proto: $(VENV)/.installed
	$(PY) -m edge_asr.daemon.api.proto --force

# The recipe from nothing: corpus, TTS, training (3 epochs, about 2 hours on 2 cores),
# export, model card. The shipped rnnt-v1 is this followed by continuations (train-more).
train: $(VENV)/.installed
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out $(SOURCE)

# Continues training the fp32 model in $(SOURCE) for $(EPOCHS) more epochs on one thread (the
# learning-rate schedule restarts), then exports over it and rewrites its card. How the
# shipped rnnt-v1 got its later epochs; about 35 minutes an epoch here. The training folder
# is named after the starting model's card, so an interrupted run resumes where it was and
# the next continuation starts a new one.
EPOCHS ?= 3
.PHONY: train-more
train-more: $(VENV)/.installed
	@test -f $(SOURCE)/model_card.json || { echo "$(SOURCE) has no model card (a run stopped \
	between export and evaluate?): python -m edge_asr.models.recipe --data $(DATA) --out \
	$(SOURCE) --exp <its training folder> --until evaluate"; exit 1; }
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out $(SOURCE) --init-from $(SOURCE) \
	    --epochs $(EPOCHS) --threads 1 --until evaluate \
	    --exp $(DATA)/exp-more-$$(sha256sum $(SOURCE)/model_card.json | cut -c1-12)

# Model v2 (v3's starting point): rnnt-v1 continued for 2 epochs on recorded speech ($(REAL), each heard three
# times an epoch when it has many speakers) and four synthetic renderings (the recipe's
# train, train_voices2, and MBROLA / RHVoice / Pico in train_voices4), then 2 more epochs
# (the learning rate restarting) with recorded speech heard four times and two renderings,
# then twice 2 more with it heard five times, all on the 4-bit grid of blocks of 128 inputs, weights chosen on dev_mixed (dev speakers of
# each corpus and dev_voices). Then the int4 model made from it, its end-of-query model and
# its wake verifier. About 95 minutes a run on 2 cores. The shipped v2 trained on four corpora
# linked into DATA/corpora under these names: speechocean762, speech_commands_test_v002,
# vctk_p239, rhasspy_cathy (the model card says where each comes from).
.PHONY: train-v2 heldout scoreboard
train-v2: $(VENV)/.installed
	@test -n "$(REAL)" || { echo "no recorded corpora: link them into $(DATA)/corpora or set REAL"; exit 1; }
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out models/rnnt-v2 --init-from models/rnnt-v1 \
	    --epochs 2 --threads 1 --n-train 5000 --more-voices 5000 --other-engines 5000 \
	    --extra-train train_voices2 train_voices4 --real $(REAL) --dev-set dev_mixed \
	    --qat-bits 4 --qat-block 128 --exp $(DATA)/exp-v2 --until evaluate
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out models/rnnt-v2 --init-from models/rnnt-v2 \
	    --epochs 2 --threads 1 --n-train 5000 --extra-train train_voices4 --real $(REAL) \
	    --real-repeat 4 --dev-set dev_mixed --qat-bits 4 --qat-block 128 --exp $(DATA)/exp-v2b \
	    --until evaluate
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out models/rnnt-v2 --init-from models/rnnt-v2 \
	    --epochs 2 --threads 1 --n-train 5000 --extra-train train_voices4 --real $(REAL) \
	    --real-repeat 5 --dev-set dev_mixed --qat-bits 4 --qat-block 128 --exp $(DATA)/exp-v2c \
	    --until evaluate
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out models/rnnt-v2 --init-from models/rnnt-v2 \
	    --epochs 2 --threads 1 --n-train 5000 --extra-train train_voices4 --real $(REAL) \
	    --real-repeat 5 --dev-set dev_mixed --qat-bits 4 --qat-block 128 --exp $(DATA)/exp-v2d \
	    --until evaluate
	$(PY) -m edge_asr.models.quantize models/rnnt-v2 models/rnnt-v2-int4 --block-4bit 128 --sets
	$(MAKE) query-end MODEL=models/rnnt-v2-int4
	$(MAKE) wake-verifier MODEL=models/rnnt-v2-int4

# Model v3 (v4's starting point): rnnt-v2 grown by two encoder layers that start silent
# (models/grow.py), 2 epochs on the recipe's synthetic train set and speechocean762 heard
# three times an epoch, then 1 epoch (the learning rate restarting lower) with Speech
# Commands and rhasspy cathy added; both keep rnnt-v2's device LM, so the figures beside
# rnnt-v2 are the acoustic model's. Then the int4 model, the end-of-query model, the wake
# word's verifier (both read the encoder) and the scoreboard. The shipped v3 was trained
# before continuations gave their fresh CTC head steps of its own, hence --ctc-head-steps 0.
# About 100 minutes of training on 2 cores.
V3_REAL := $(DATA)/corpora/speechocean762 $(DATA)/corpora/speech_commands_test_v002 \
    $(DATA)/corpora/rhasspy_cathy
# What v3's runs and v4's share: 2 threads, the 4-bit grid, dev_mixed, the parent's device LM.
V34_FLAGS := --threads 2 --n-train 5000 --concat-prob 0.2 --vtlp-prob 0.5 --dev-set dev_mixed \
    --qat-bits 4 --qat-block 128 --keep-device-lm
V3_FLAGS := $(V34_FLAGS) --real-repeat 3 --ctc-head-steps 0
.PHONY: train-v3
train-v3: $(VENV)/.installed
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out $(DATA)/rnnt-v3-grown \
	    --init-from models/rnnt-v2 --grow-layers 2 --epochs 2 --real $(DATA)/corpora/speechocean762 \
	    $(V3_FLAGS) --seed 1 --exp $(DATA)/exp-v3a --until evaluate --eval-sets
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out models/rnnt-v3 \
	    --init-from $(DATA)/rnnt-v3-grown --epochs 1 --real $(V3_REAL) --peak-lr 3e-4 \
	    $(V3_FLAGS) --seed 2 --exp $(DATA)/exp-v3b --until evaluate
	$(PY) -m edge_asr.models.quantize models/rnnt-v3 models/rnnt-v3-int4 --block-4bit 128
	$(MAKE) query-end MODEL=models/rnnt-v3-int4
	$(MAKE) wake-verifier MODEL=models/rnnt-v3-int4
	$(MAKE) scoreboard

# Model v4 (the default): rnnt-v3 one epoch on, the recorded corpora heard four times an
# epoch, a lower peak, the CTC head fitted alone for 300 steps, rnnt-v3's device LM kept;
# then its int4 model, end-of-query model, wake verifier and the scoreboard beside v3. About
# 62 minutes of training on 2 cores.
.PHONY: train-v4
train-v4: $(VENV)/.installed
	$(PY) -m edge_asr.models.recipe --data $(DATA) --out models/rnnt-v4 \
	    --init-from models/rnnt-v3 --epochs 1 --real $(V3_REAL) --real-repeat 4 --peak-lr 2e-4 \
	    $(V34_FLAGS) --seed 3 --exp $(DATA)/exp-v4 --until evaluate
	$(PY) -m edge_asr.models.quantize models/rnnt-v4 models/rnnt-v4-int4 --block-4bit 128
	$(MAKE) query-end MODEL=models/rnnt-v4-int4
	$(MAKE) wake-verifier MODEL=models/rnnt-v4-int4
	$(MAKE) scoreboard

# The learned end-of-query model for MODEL (models/query_end_train.py): the pause sets of the
# development and held-out speakers (models/pause_sets.py), quiet and with music 10 dB under
# the talker, then training on the training split and the threshold tuned on the
# development sets.
.PHONY: query-end
query-end: $(VENV)/.installed
	$(PY) -m edge_asr.models.pause_sets --data $(DATA) \
	    --sets dev_voices speechocean762_dev test_voices test_hibari test_speechocean762
	$(PY) -m edge_asr.models.pause_sets --data $(DATA) --noise music:10 \
	    --sets dev_voices speechocean762_dev test_voices test_speechocean762
	$(PY) -m edge_asr.models.query_end_train --data $(DATA) --model $(MODEL) \
	    --dev eoq_dev_voices eoq_dev_voices_pause eoq_speechocean762_dev \
	    eoq_speechocean762_dev_pause eoq_dev_voices_music10 eoq_dev_voices_music10_pause \
	    eoq_speechocean762_dev_music10 eoq_speechocean762_dev_music10_pause \
	    --cache $(DATA)/exp-query-end

# The wake word's verifier for MODEL (models/wake_verifier.py): the phrase and confusable
# phrases said by the training voices, and the training speech, through the spotter; written
# to MODEL/wake_verifier.json and its card. About 4 minutes on 2 cores.
.PHONY: wake-verifier
wake-verifier: $(VENV)/.installed
	$(PY) -m edge_asr.models.wake_verifier --model $(MODEL) --manifests $(DATA)/manifests

# The evaluation-only sets: FSDD digit strings (real speakers), hibari-tts (an engine no
# training set uses), festival's kal_diphone (a reserved voice).
heldout: $(VENV)/.installed
	$(PY) -m edge_asr.models.heldout_sets fsdd $(FSDD) --data $(DATA)
	$(PY) -m edge_asr.models.heldout_sets hibari --data $(DATA)
	$(PY) -m edge_asr.models.heldout_sets kal --data $(DATA)

# Every held-out set, people first, v4 beside v3 (4-bit both), figures into both cards.
scoreboard: heldout
	$(PY) -m edge_asr.models.scoreboard --data $(DATA) --model models/rnnt-v4-int4 \
	    --model models/rnnt-v3-int4 --speakers --card --output $(DATA)/scoreboard.json

# The device LM of rnnt-v4 and its int4 form (the same files in both): the recipe's corpus
# counted three times, the transcripts of speechocean762's and cathy's training speakers, and
# general English: the CC0 sentences of Common Voice (server/data/en/*.txt of
# github.com/common-voice/common-voice at commit 26249db69c2d, 2020-09-22, the shipped LM's;
# later commits hold more; CV_TEXT names a folder of them), less every sentence of the
# evaluation sets. Writes lm.arpa.gz, lm_names.arpa.gz, lm.tables.npz and the cards'
# entries. About 15 seconds a folder.
CV_TEXT ?= $(DATA)/corpora/cv_sentences
LM_EXCLUDE = $(wildcard $(DATA)/manifests/test_*.jsonl $(DATA)/manifests/dev*.jsonl) \
    $(DATA)/manifests/speechocean762_dev.jsonl
.PHONY: device-lm
device-lm: $(VENV)/.installed
	@ls $(CV_TEXT)/*.txt >/dev/null 2>&1 || { echo "no $(CV_TEXT)/*.txt: copy server/data/en/*.txt of github.com/common-voice/common-voice there (CC0)"; exit 1; }
	for m in models/rnnt-v4 models/rnnt-v4-int4; do \
	  $(PY) -m edge_asr.models.device_lm --data $(DATA) --model $$m --domain-repeat 3 \
	    --transcripts $(DATA)/manifests/speechocean762_train.jsonl \
	    $(DATA)/manifests/rhasspy_cathy_train.jsonl \
	    --text $(CV_TEXT)/*.txt --exclude $(LM_EXCLUDE) \
	    --text-source "Common Voice's sentences, server/data/en/*.txt of github.com/common-voice/common-voice as of 2020-09-22 (commit 26249db69c2d, as its fork skanderbenalaya/common-voice holds it), CC0 1.0" \
	    > /dev/null || exit 1; \
	done

# The cloud's language models (n-gram + LSTM): the generated corpus in $(DATA)/cloud_lm,
# the transcripts of speechocean762's training speakers (the acoustic recipe's manifest;
# its dev and test sentences left out) and the World English Bible (public domain, from
# Debian's sword-text-web); models and their card in models/cloud-lm, which is committed
# (pruned 4-gram, int8 LSTM), so `make run` needs no build. About 20 minutes on one core.
CLOUD_TEXT := $(DATA)/cloud_lm/world_english_bible.txt
MANIFESTS  := $(DATA)/manifests
.PHONY: cloud-lm
cloud-lm: $(VENV)/.installed $(CLOUD_TEXT)
	@test -f $(MANIFESTS)/speechocean762_train.jsonl || { echo "no $(MANIFESTS)/speechocean762_train.jsonl: run make train-v2 (or the recipe's audio stage) first"; exit 1; }
	OMP_NUM_THREADS=1 $(PY) -m edge_asr.models.cloud_lm_recipe --data $(DATA)/cloud_lm --out models/cloud-lm \
	    --text $(MANIFESTS)/speechocean762_train.jsonl \
	    --exclude $(MANIFESTS)/speechocean762_dev.jsonl $(MANIFESTS)/test_speechocean762.jsonl \
	    --public-text $(CLOUD_TEXT) --public-vocabulary 3000 --neural-seconds 1500

# The cloud's rescoring weights for MODEL's lattices: each development set's lattices (the
# recipe's held-out voices, names, voices at 10 dB and speechocean762's development speakers;
# no test speaker or engine), then the grid search, which weighs the sets alike and writes
# models/cloud-lm/weights.json. About 3 minutes.
CLOUD_DEV := dev_voices dev_names dev_snr10 speechocean762_dev
.PHONY: cloud-weights
cloud-weights: $(VENV)/.installed
	mkdir -p $(DATA)/lattices
	for s in $(CLOUD_DEV); do \
	  $(VENV)/bin/edge-asr eval $(MANIFESTS)/$$s.jsonl --model $(MODEL) \
	    --lattices $(DATA)/lattices/$$s.jsonl > /dev/null || exit 1; \
	done
	$(PY) -m edge_asr.simulator.cloud.weight_tuning --lm models/cloud-lm --write \
	    --dev $(foreach s,$(CLOUD_DEV),$(DATA)/lattices/$(s).jsonl)

# One verse a line, as diatheke (the SWORD project's reader) prints the module.
$(CLOUD_TEXT):
	@dpkg -s diatheke sword-text-web >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq diatheke sword-text-web >/dev/null; }
	mkdir -p $(dir $@)
	diatheke -b engWEB2015eb -f plain -k "Genesis 1:1 - Revelation 22:21" > $@.part && mv $@.part $@

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
# scenario in sim-reports/NAME/report.md, music_playing again without echo cancellation, and
# tv_household again without the wake word (the same room: what the TV sends to the cloud),
# music_other_device again with Silero's network beside webrtcvad (vad_speech_model).
# About 15 minutes: three scenarios play in real time.
.PHONY: sim
sim: $(VENV)/.installed
	@for s in quiet_kitchen noisy_party music_playing music_other_device flaky_wifi offline \
	    tv_household second_talker; do \
	  $(VENV)/bin/edge-asr sim run $$s --out sim-reports/$$s || exit 1; \
	done
	$(VENV)/bin/edge-asr sim run music_playing --no-echo-cancellation \
	    --out sim-reports/music_playing_no_aec
	$(VENV)/bin/edge-asr sim run tv_household --no-wake-word \
	    --out sim-reports/tv_household_no_wake_word
	$(VENV)/bin/edge-asr sim run music_other_device --vad-speech-model \
	    --out sim-reports/music_other_device_speech_model
	$(VENV)/bin/edge-asr sim table sim-reports/*

# The cloud bench first: it needs only the committed cloud LM, not an acoustic model.
bench: $(VENV)/.installed
	$(PY) bench/cloud.py --lm models/cloud-lm
	$(PY) bench/rtf.py --model $(SOURCE) --model $(MODEL)
	$(PY) bench/daemon.py --model $(MODEL)
	$(PY) bench/peers.py --model $(SOURCE)

# An hour of the daemon on the bundled clips looped in real time, one subscriber: RSS at the
# start, after warm-up and at the end; utterances in, finals out, lost or duplicated finals
# (bench/soak.py; tests/test_soak.py runs the same for 40 s).
.PHONY: reliability
reliability: $(VENV)/.installed
	$(PY) bench/soak.py --minutes 60 --model $(MODEL)

clean-venv:
	rm -rf $(VENV)
