// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are cast macros
// that Swift cannot import. They are given prefixed names here, declared and
// defined in this one place.
#ifndef DAPT_CMPI_SHIM_H
#define DAPT_CMPI_SHIM_H
#include <mpi.h>

static inline MPI_Comm dapt_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm dapt_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Errhandler dapt_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline void *dapt_mpi_in_place(void) { return MPI_IN_PLACE; }

static inline MPI_Datatype dapt_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype dapt_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype dapt_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype dapt_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype dapt_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype dapt_mpi_uint64(void) { return MPI_UINT64_T; }

static inline MPI_Op dapt_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op dapt_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op dapt_mpi_min(void) { return MPI_MIN; }

static inline int dapt_mpi_success(void) { return MPI_SUCCESS; }
static inline int dapt_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int dapt_mpi_undefined(void) { return MPI_UNDEFINED; }
static inline int dapt_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int dapt_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int dapt_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int dapt_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }
static inline MPI_Status *dapt_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *dapt_mpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline MPI_Request dapt_mpi_request_null(void) { return MPI_REQUEST_NULL; }

#endif
