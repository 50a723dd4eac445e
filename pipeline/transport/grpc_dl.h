/*
 * grpc_dl.h — grpc core, loaded when the configuration first needs it.
 *
 * spanprofd is not linked against libgrpc/libgpr: mapped at start-up, the
 * grpc stack (libgrpc, absl, re2, upb, c-ares, libstdc++ ...) costs about
 * 8 MiB of resident memory even in a daemon that never serves or sends
 * gRPC. Instead the library is dlopen()ed by its SONAME (fixed at build
 * time) the first time a gRPC server or client is created, and every
 * function the transport calls is resolved into one table, sp_grpc_api.
 *
 * A .c file that calls grpc includes this header after the grpc headers;
 * the macros at the end then turn `grpc_foo(...)` into a call through the
 * table, so call sites read as plain grpc code. Every function must be in
 * SP_GRPC_DL_FUNCS; one that is missing shows up as an undefined reference
 * when spanprofd is linked (the build's check that nothing escapes the
 * table). The table is valid only after sp_grpc_dl_load() returned 0.
 *
 * Code that links libgrpc directly (tests) may use both: dlopen() of an
 * already-loaded SONAME returns the same library.
 */
#ifndef SP_GRPC_DL_H
#define SP_GRPC_DL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <stddef.h>

/* Every grpc core / gpr function spanprof calls. */
#define SP_GRPC_DL_FUNCS(X)                                                                        \
  X(gpr_free)                                                                                      \
  X(gpr_inf_future)                                                                                \
  X(gpr_now)                                                                                       \
  X(gpr_set_log_function)                                                                          \
  X(gpr_time_add)                                                                                  \
  X(gpr_time_from_millis)                                                                          \
  X(grpc_byte_buffer_destroy)                                                                      \
  X(grpc_byte_buffer_reader_destroy)                                                               \
  X(grpc_byte_buffer_reader_init)                                                                  \
  X(grpc_byte_buffer_reader_readall)                                                               \
  X(grpc_call_cancel)                                                                              \
  X(grpc_call_details_destroy)                                                                     \
  X(grpc_call_details_init)                                                                        \
  X(grpc_call_get_peer)                                                                            \
  X(grpc_call_start_batch)                                                                         \
  X(grpc_call_unref)                                                                               \
  X(grpc_channel_create)                                                                           \
  X(grpc_channel_create_call)                                                                      \
  X(grpc_channel_credentials_release)                                                              \
  X(grpc_channel_destroy)                                                                          \
  X(grpc_completion_queue_create_for_next)                                                         \
  X(grpc_completion_queue_destroy)                                                                 \
  X(grpc_completion_queue_next)                                                                    \
  X(grpc_completion_queue_shutdown)                                                                \
  X(grpc_empty_slice)                                                                              \
  X(grpc_init)                                                                                     \
  X(grpc_insecure_credentials_create)                                                              \
  X(grpc_insecure_server_credentials_create)                                                       \
  X(grpc_metadata_array_destroy)                                                                   \
  X(grpc_metadata_array_init)                                                                      \
  X(grpc_raw_byte_buffer_create)                                                                   \
  X(grpc_server_add_http2_port)                                                                    \
  X(grpc_server_cancel_all_calls)                                                                  \
  X(grpc_server_create)                                                                            \
  X(grpc_server_credentials_release)                                                               \
  X(grpc_server_destroy)                                                                           \
  X(grpc_server_register_completion_queue)                                                         \
  X(grpc_server_request_call)                                                                      \
  X(grpc_server_shutdown_and_notify)                                                               \
  X(grpc_server_start)                                                                             \
  X(grpc_shutdown)                                                                                 \
  X(grpc_slice_from_copied_buffer)                                                                 \
  X(grpc_slice_from_copied_string)                                                                 \
  X(grpc_slice_from_static_string)                                                                 \
  X(grpc_slice_malloc)                                                                             \
  X(grpc_slice_ref)                                                                                \
  X(grpc_slice_unref)                                                                              \
  X(grpc_ssl_credentials_create_ex)                                                                \
  X(grpc_ssl_server_credentials_create_ex)                                                         \
  X(grpc_tls_certificate_provider_release)                                                         \
  X(grpc_tls_certificate_provider_static_data_create)                                              \
  X(grpc_tls_certificate_verifier_no_op_create)                                                    \
  X(grpc_tls_certificate_verifier_release)                                                         \
  X(grpc_tls_credentials_create)                                                                   \
  X(grpc_tls_credentials_options_create)                                                           \
  X(grpc_tls_credentials_options_set_certificate_provider)                                         \
  X(grpc_tls_credentials_options_set_certificate_verifier)                                         \
  X(grpc_tls_credentials_options_set_check_call_host)                                              \
  X(grpc_tls_credentials_options_set_verify_server_cert)                                           \
  X(grpc_tls_credentials_options_watch_identity_key_cert_pairs)                                    \
  X(grpc_tls_identity_pairs_add_pair)                                                              \
  X(grpc_tls_identity_pairs_create)

/** The resolved functions, each typed from its declaration in the grpc headers. */
typedef struct sp_grpc_api_s {
#define SP_GRPC_DL_FIELD(fn) __typeof__(fn) *fn;
  SP_GRPC_DL_FUNCS(SP_GRPC_DL_FIELD)
#undef SP_GRPC_DL_FIELD
} sp_grpc_api_t;

/** The table; filled once by the first successful sp_grpc_dl_load(), read-only afterwards. */
extern sp_grpc_api_t sp_grpc_api;

/**
 * Loads grpc core (libgrpc and, through it, libgpr) and resolves the table.
 * Idempotent and thread-safe: the first call does the work, later calls
 * return its outcome. Returns 0, or SP_ENOTSUP when the library or one of
 * the functions is missing; then, if @p err is not NULL, writes a message
 * such as "OTLP/gRPC needs libgrpc29: dlopen libgrpc.so.29: ...: cannot
 * open shared object file" into @p err (@p errlen bytes, NUL-terminated).
 * Never undone: the library stays loaded for the life of the process. Any
 * thread (blocks while the library is read from disk).
 */
int sp_grpc_dl_load(char *err, size_t errlen);

/* ---- call sites go through the table ------------------------------------- */

#ifndef SP_GRPC_DL_IMPL /* grpc_dl.c fills the table by member name */

#define gpr_free (sp_grpc_api.gpr_free)
#define gpr_inf_future (sp_grpc_api.gpr_inf_future)
#define gpr_now (sp_grpc_api.gpr_now)
#define gpr_set_log_function (sp_grpc_api.gpr_set_log_function)
#define gpr_time_add (sp_grpc_api.gpr_time_add)
#define gpr_time_from_millis (sp_grpc_api.gpr_time_from_millis)
#define grpc_byte_buffer_destroy (sp_grpc_api.grpc_byte_buffer_destroy)
#define grpc_byte_buffer_reader_destroy (sp_grpc_api.grpc_byte_buffer_reader_destroy)
#define grpc_byte_buffer_reader_init (sp_grpc_api.grpc_byte_buffer_reader_init)
#define grpc_byte_buffer_reader_readall (sp_grpc_api.grpc_byte_buffer_reader_readall)
#define grpc_call_cancel (sp_grpc_api.grpc_call_cancel)
#define grpc_call_details_destroy (sp_grpc_api.grpc_call_details_destroy)
#define grpc_call_details_init (sp_grpc_api.grpc_call_details_init)
#define grpc_call_get_peer (sp_grpc_api.grpc_call_get_peer)
#define grpc_call_start_batch (sp_grpc_api.grpc_call_start_batch)
#define grpc_call_unref (sp_grpc_api.grpc_call_unref)
#define grpc_channel_create (sp_grpc_api.grpc_channel_create)
#define grpc_channel_create_call (sp_grpc_api.grpc_channel_create_call)
#define grpc_channel_credentials_release (sp_grpc_api.grpc_channel_credentials_release)
#define grpc_channel_destroy (sp_grpc_api.grpc_channel_destroy)
#define grpc_completion_queue_create_for_next (sp_grpc_api.grpc_completion_queue_create_for_next)
#define grpc_completion_queue_destroy (sp_grpc_api.grpc_completion_queue_destroy)
#define grpc_completion_queue_next (sp_grpc_api.grpc_completion_queue_next)
#define grpc_completion_queue_shutdown (sp_grpc_api.grpc_completion_queue_shutdown)
#define grpc_empty_slice (sp_grpc_api.grpc_empty_slice)
#define grpc_init (sp_grpc_api.grpc_init)
#define grpc_insecure_credentials_create (sp_grpc_api.grpc_insecure_credentials_create)
#define grpc_insecure_server_credentials_create                                                    \
  (sp_grpc_api.grpc_insecure_server_credentials_create)
#define grpc_metadata_array_destroy (sp_grpc_api.grpc_metadata_array_destroy)
#define grpc_metadata_array_init (sp_grpc_api.grpc_metadata_array_init)
#define grpc_raw_byte_buffer_create (sp_grpc_api.grpc_raw_byte_buffer_create)
#define grpc_server_add_http2_port (sp_grpc_api.grpc_server_add_http2_port)
#define grpc_server_cancel_all_calls (sp_grpc_api.grpc_server_cancel_all_calls)
#define grpc_server_create (sp_grpc_api.grpc_server_create)
#define grpc_server_credentials_release (sp_grpc_api.grpc_server_credentials_release)
#define grpc_server_destroy (sp_grpc_api.grpc_server_destroy)
#define grpc_server_register_completion_queue (sp_grpc_api.grpc_server_register_completion_queue)
#define grpc_server_request_call (sp_grpc_api.grpc_server_request_call)
#define grpc_server_shutdown_and_notify (sp_grpc_api.grpc_server_shutdown_and_notify)
#define grpc_server_start (sp_grpc_api.grpc_server_start)
#define grpc_shutdown (sp_grpc_api.grpc_shutdown)
#define grpc_slice_from_copied_buffer (sp_grpc_api.grpc_slice_from_copied_buffer)
#define grpc_slice_from_copied_string (sp_grpc_api.grpc_slice_from_copied_string)
#define grpc_slice_from_static_string (sp_grpc_api.grpc_slice_from_static_string)
#define grpc_slice_malloc (sp_grpc_api.grpc_slice_malloc)
#define grpc_slice_ref (sp_grpc_api.grpc_slice_ref)
#define grpc_slice_unref (sp_grpc_api.grpc_slice_unref)
#define grpc_ssl_credentials_create_ex (sp_grpc_api.grpc_ssl_credentials_create_ex)
#define grpc_ssl_server_credentials_create_ex (sp_grpc_api.grpc_ssl_server_credentials_create_ex)
#define grpc_tls_certificate_provider_release (sp_grpc_api.grpc_tls_certificate_provider_release)
#define grpc_tls_certificate_provider_static_data_create                                           \
  (sp_grpc_api.grpc_tls_certificate_provider_static_data_create)
#define grpc_tls_certificate_verifier_no_op_create                                                 \
  (sp_grpc_api.grpc_tls_certificate_verifier_no_op_create)
#define grpc_tls_certificate_verifier_release (sp_grpc_api.grpc_tls_certificate_verifier_release)
#define grpc_tls_credentials_create (sp_grpc_api.grpc_tls_credentials_create)
#define grpc_tls_credentials_options_create (sp_grpc_api.grpc_tls_credentials_options_create)
#define grpc_tls_credentials_options_set_certificate_provider                                      \
  (sp_grpc_api.grpc_tls_credentials_options_set_certificate_provider)
#define grpc_tls_credentials_options_set_certificate_verifier                                      \
  (sp_grpc_api.grpc_tls_credentials_options_set_certificate_verifier)
#define grpc_tls_credentials_options_set_check_call_host                                           \
  (sp_grpc_api.grpc_tls_credentials_options_set_check_call_host)
#define grpc_tls_credentials_options_set_verify_server_cert                                        \
  (sp_grpc_api.grpc_tls_credentials_options_set_verify_server_cert)
#define grpc_tls_credentials_options_watch_identity_key_cert_pairs                                 \
  (sp_grpc_api.grpc_tls_credentials_options_watch_identity_key_cert_pairs)
#define grpc_tls_identity_pairs_add_pair (sp_grpc_api.grpc_tls_identity_pairs_add_pair)
#define grpc_tls_identity_pairs_create (sp_grpc_api.grpc_tls_identity_pairs_create)
#endif

#endif
