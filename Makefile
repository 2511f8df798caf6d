# The two commands a fresh machine needs are `make demo` and `make test`; the rest are helpers.
SHELL := /bin/bash
EXTRAS ?= operator,dev,test,trainer
VENV = $(shell hack/ensure-venv.sh $(EXTRAS))
PYTEST_ARGS ?=

.PHONY: demo test unit e2e e2e-kind render-reference crds binaries

## demo: set everything up, then run a tiny release on a local single-node cluster and ask it a question
demo:
	@hack/ensure-host.sh; venv=$(VENV); set -e; \
	echo "== twlegal validate examples/release-*.yaml"; "$$venv/bin/twlegal" validate examples/release-*.yaml; \
	"$$venv/bin/python" hack/demo.py

## test: set everything up, then run every test tier (unit, component, integration, e2e)
test:
	@hack/ensure-host.sh; venv=$(VENV); "$$venv/bin/python" -m pytest $(PYTEST_ARGS)

## e2e: only the end-to-end tier (a real node on this host)
e2e:
	@hack/ensure-host.sh; venv=$(VENV); "$$venv/bin/python" -m pytest tests/e2e $(PYTEST_ARGS)

## e2e-kind: the end-to-end tier on a kind cluster (needs Docker, kind and network access for kindest/node)
e2e-kind:
	@venv=$(VENV); PYTHON="$$venv/bin/python" hack/e2e-kind.sh $(PYTEST_ARGS)

## render-reference: what the operator creates for the reference release, stage by stage
render-reference:
	@venv=$(VENV); set -e; \
	for stage in training evaluation serving; do \
	  echo; echo "== twlegal render examples/release-2024-11-13.yaml --stage $$stage"; \
	  "$$venv/bin/twlegal" render examples/release-2024-11-13.yaml --stage $$stage; \
	done

## unit: the fast, pure tier only
unit:
	@venv=$(VENV); "$$venv/bin/python" -m pytest tests/unit $(PYTEST_ARGS)

## crds: regenerate the CRD (crds/ and the chart's copy) from the API models
crds:
	@venv=$(VENV); "$$venv/bin/twlegal" crd > crds/twlegal.io_legalmodelreleases.yaml; \
	cp crds/twlegal.io_legalmodelreleases.yaml charts/twlegal/files/crds/

## binaries: build (or reuse) etcd, kube-apiserver & co and helm from the Go module proxy
binaries:
	dev/twlegal_dev/build-binaries.sh all
