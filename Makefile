# The two commands a fresh machine needs are `make demo` and `make test`; the rest are helpers.
SHELL := /bin/bash
EXTRAS ?= operator,dev,test,trainer
VENV = $(shell hack/ensure-venv.sh $(EXTRAS))
PYTEST_ARGS ?=

.PHONY: demo test unit crds binaries

## demo: set everything up, then show what the operator does with the reference release
demo:
	@venv=$(VENV); set -e; \
	echo "== twlegal validate examples/*.yaml"; "$$venv/bin/twlegal" validate examples/*.yaml; \
	for stage in training evaluation serving; do \
	  echo; echo "== twlegal render examples/release-2024-11-13.yaml --stage $$stage"; \
	  "$$venv/bin/twlegal" render examples/release-2024-11-13.yaml --stage $$stage; \
	done

## test: set everything up, then run every test tier
test:
	@venv=$(VENV); "$$venv/bin/python" -m pytest $(PYTEST_ARGS)

## unit: the fast, pure tier only
unit:
	@venv=$(VENV); "$$venv/bin/python" -m pytest tests/unit $(PYTEST_ARGS)

## crds: regenerate the CRD (crds/ and the chart's copy) from the API models
crds:
	@venv=$(VENV); "$$venv/bin/twlegal" crd > crds/twlegal.io_legalmodelreleases.yaml; \
	cp crds/twlegal.io_legalmodelreleases.yaml charts/twlegal/files/crds/

## binaries: build (or reuse) etcd, kube-apiserver & co and helm from the Go module proxy
binaries:
	operator/twlegal/devcluster/build-binaries.sh all
