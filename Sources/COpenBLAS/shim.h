// OpenBLAS's CBLAS interface plus its thread-count controls.
#ifndef DAPT_COPENBLAS_SHIM_H
#define DAPT_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
