# `make demo` and `make test` work on a machine with only Python 3.11: they create .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and by exact version: pip takes the wheels this machine keeps on disk.
	$(BIN)/pip install --quiet -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,deploy]'
	# our modules' bytecode once: where PYTHONDONTWRITEBYTECODE is set, every process (each stage of
	# the demo, each test's subprocess) would compile them again (~0.1 s each)
	$(BIN)/python -m compileall -q engine backbones classification detection segmentation tools > /dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/backbone_speed.py
	$(BIN)/python benchmarks/detector_speed.py

clean:
	rm -rf $(VENV) runs build *.egg-info
