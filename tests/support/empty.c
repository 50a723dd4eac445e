/* keeps sp_testsupport non-empty before any helper exists */
typedef int sp_testsupport_empty_t;
