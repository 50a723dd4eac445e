/*
 * log.h — leveled logs to stderr in logfmt or JSON.
 *
 * Each line names the component it comes from ("otlp", "exporter/file/x"...).
 * Level and encoding come from service.telemetry.logs and may change on a
 * reload. Logging may be called from any thread; a line is written with one
 * write(2) so lines never interleave.
 */
#ifndef SP_LOG_H
#define SP_LOG_H

typedef enum { SP_LOG_DEBUG = 0, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR, SP_LOG_OFF } sp_log_level_t;
typedef enum { SP_LOG_LOGFMT = 0, SP_LOG_JSON } sp_log_encoding_t;

/** Sets the minimum level written. */
void sp_log_set_level(sp_log_level_t level);
/** Sets the line encoding. */
void sp_log_set_encoding(sp_log_encoding_t enc);
/** Sends log lines to @p fd instead of stderr (tests); -1 restores stderr. */
void sp_log_set_fd(int fd);
/** Parses "debug|info|warn|error|none"; returns -1 when unknown. */
int sp_log_level_parse(const char *s);
/** True when lines at @p level are written. */
int sp_log_enabled(sp_log_level_t level);

/**
 * Writes one line: time, level, @p component (may be NULL for the service),
 * and the printf-formatted message.
 */
void sp_log(sp_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sp_log_debug(comp, ...) sp_log(SP_LOG_DEBUG, comp, __VA_ARGS__)
#define sp_log_info(comp, ...) sp_log(SP_LOG_INFO, comp, __VA_ARGS__)
#define sp_log_warn(comp, ...) sp_log(SP_LOG_WARN, comp, __VA_ARGS__)
#define sp_log_error(comp, ...) sp_log(SP_LOG_ERROR, comp, __VA_ARGS__)

#endif
