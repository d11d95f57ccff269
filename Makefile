# Thin wrapper around meson/ninja and the scripts.  The two commands of
# the README's quick start are `make demo` and `make test`.
BUILD ?= build

.PHONY: all deps build install demo test unit e2e bench fuzz clean

all: build

deps:
	./scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Programs, guest kernel and image, unit file, default config, man pages.
# DESTDIR=/some/root stages the install there (packaging, tests).
install: build
	meson install -C $(BUILD) --no-rebuild $(if $(DESTDIR),--destdir "$(DESTDIR)")

demo: build
	./scripts/demo.sh $(BUILD)

test: deps
	./scripts/run-tests.sh

bench: build
	@echo "see bench/README.md for each benchmark's command"

fuzz: deps
	./scripts/fuzz.sh

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
