/*
 * control_int.h: what control.c and control_request.c share; not an API
 * (callers use control.h).
 */
#ifndef EBB_CONTROL_INT_H
#define EBB_CONTROL_INT_H

#include "control.h"

#define DESC_MAX		512	/* bytes of an error description */
#define NAME_IN_DESC		"%.64s"	/* untrusted names quoted in errors */

/* A malloc'd formatted string, NULL if out of memory. */
char *strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Make @s fit to quote in an error description (bounded, printable). */
void desc_clean(char *s);

#endif
