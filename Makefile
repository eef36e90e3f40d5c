# The newcomer's commands (see README):
#   make demo    set everything up, then edit a sample picture through the pack in a real ComfyUI
#   make test    lint, type-check and run the test suite on both fetched hosts
# Also: make setup | make edit IMAGE=photo.jpg INSTRUCTION="make it snowy" [ARGS="--steps 50"]
# Set COMFYUI_PATH=/path/to/ComfyUI to use your own ComfyUI instead of the fetched ones.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV_PY := .venv/bin/python
# pytest exits 5 when it collected no test; here that means a broken selection, so it fails.
PYTEST = $(VENV_PY) -m pytest tests
CHECK_COLLECTED = rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the selection is broken"; exit 1; fi; exit $$rc

.PHONY: setup demo edit test lint workflows

setup:
	$(PYTHON) -m ipx2p_tools.setup

demo: setup
	$(VENV_PY) -m ipx2p_tools.demo

edit:
	@test -n "$(IMAGE)" -a -n "$(INSTRUCTION)" || { echo 'usage: make edit IMAGE=photo.jpg INSTRUCTION="make it snowy" [ARGS=...]'; exit 2; }
	$(VENV_PY) -m ipx2p_tools.edit --image "$(IMAGE)" --instruction "$(INSTRUCTION)" $(ARGS)

lint:
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m mypy

test: lint
ifdef COMFYUI_PATH
	$(PYTEST); $(CHECK_COLLECTED)
else
	IPX2P_HOST=0.30.0 $(PYTEST); $(CHECK_COLLECTED)
	IPX2P_HOST=0.3.75 $(PYTEST) -m floor; $(CHECK_COLLECTED)
endif

workflows:
	$(VENV_PY) -m ipx2p_tools.build_workflows
