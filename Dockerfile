# sd-hw in a container: the same set-up script as on a workstation.
FROM debian:12.8
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends make ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sd-hw
COPY . .
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/*
CMD ["make", "demo"]
