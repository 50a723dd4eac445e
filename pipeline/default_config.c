/*
 * default_config.c — the configuration spanprofd runs without --config: the
 * local-dev pipeline. Receivers listen on 127.0.0.1 at the standard ports;
 * everything lands in ./spanprof-data/ through the file exporter. It grows as
 * components land, and stays runnable on a fresh machine.
 */
#include "pipeline/service.h"

const char sp_default_config[] =
    "receivers:\n"
    "  otlp:\n"
    "    protocols:\n"
    "      grpc:\n"
    "        endpoint: 127.0.0.1:4317\n"
    "      http:\n"
    "        endpoint: 127.0.0.1:4318\n"
    "processors:\n"
    "  batch: {}\n"
    "exporters:\n"
    "  file:\n"
    "    path: ./spanprof-data\n"
    "  debug:\n"
    "    verbosity: basic\n"
    "service:\n"
    "  pipelines:\n"
    "    traces:\n"
    "      receivers: [otlp]\n"
    "      processors: [batch]\n"
    "      exporters: [file, debug]\n"
    "    profiles:\n"
    "      receivers: [otlp]\n"
    "      exporters: [file, debug]\n";
