# linreg set-up and everyday commands. Everything lives in .venv; nothing is installed globally.
#   make demo   set up, make a small data set, train on it, show the artifacts
#   make test   set up, then run the test suite (this is what CI runs)
PY      ?= python3
VENV    ?= .venv
RUNTIME ?= .venv-runtime
BIN      = $(VENV)/bin
# torch: the CPU build of 2.13.0. On machines whose pip would pick a multi-GB CUDA build, point
# TORCH_INDEX_URL at PyTorch's CPU wheel index (or its CUDA index for a GPU build); see README.
TORCH_SPEC      ?= torch==2.13.0
TORCH_INDEX_URL ?=
TORCH_INDEX      = $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: setup setup-runtime setup-embed browser java node demo test lint bench clean proto

setup: $(VENV)/.done
$(VENV)/.done: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,plot,http,grpc,dask,spark,mlflow,test]"
	touch $@

# The runtime alone (no torch at all), to prove serve/ needs none of it.
setup-runtime: $(RUNTIME)/.done
$(RUNTIME)/.done: pyproject.toml
	$(PY) -m venv $(RUNTIME)
	$(RUNTIME)/bin/pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/linreg-synth data/example.csv --samples 1000 --features 3 --seed 0 --force
	$(BIN)/linreg-train data/example.csv --standardize --val-fraction 0.2 --log-every 250 --force
	$(BIN)/linreg-export models/example --force
	$(BIN)/linreg-predict models/example data/example.csv -o data/example-predictions.csv --force
	@head -4 data/example-predictions.csv

# The embedding examples: onnxruntime-node and onnxruntime-web from the npm registry (versions
# pinned by the lock files) and Debian's chromium for the browser test.
setup-embed: node examples/node/node_modules/.done examples/web/node_modules/.done browser
examples/%/node_modules/.done: examples/%/package-lock.json | node
	cd examples/$* && npm ci --no-audit --no-fund --loglevel=error
	touch $@
# Node.js and npm: Debian's, when there are none.
node:
	@command -v npm >/dev/null && command -v node >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null)
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Spark (linreg-predict --engine spark) runs on a Java runtime: Debian's, when there is none.
java:
	@command -v java >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null)

test: setup setup-runtime setup-embed java
	$(BIN)/ruff check .
	LINREG_REQUIRE_EMBED=1 $(BIN)/python -m pytest -q
	$(RUNTIME)/bin/python -m pytest -q tests/serve -p no:cacheprovider

bench: setup
	$(BIN)/python bench/train.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/tabular.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/asgi.py

clean:
	rm -rf $(VENV) $(RUNTIME) .venv-proto build *.egg-info examples/*/node_modules

# The gRPC code in serve/server/proto, generated from serve/server/proto/inference.proto (committed; run this
# after editing the .proto). grpcio-tools 1.81.1 writes protobuf 6.33 code, which protobuf 6.33+
# and 7 both load; the sed makes the service module import its messages relatively.
proto:
	$(PY) -m venv .venv-proto
	.venv-proto/bin/pip install -q grpcio-tools==1.81.1
	.venv-proto/bin/python -m grpc_tools.protoc -I serve/server/proto --python_out=serve/server/proto \
	  --grpc_python_out=serve/server/proto serve/server/proto/inference.proto
	sed -i 's/^import inference_pb2 as/from . import inference_pb2 as/' serve/server/proto/inference_pb2_grpc.py
	# a descriptor pool of its own: tritonclient.grpc defines the same names in the default one
	sed -i 's/_descriptor_pool.Default().AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \
	  serve/server/proto/inference_pb2.py
