/*
 * guest_run: the table of guest-run's arguments, derived from the one
 * list in guest_run.h, and the daemon-side reader of a request's values.
 */
#include "guest_run.h"

#include "control.h"

#define GR_ROW(field, kind, required, option, flag, omit0)		\
	{ #field, kind, required, option, flag, omit0,			\
	  offsetof(struct guest_run, field) },

const struct guest_run_arg guest_run_args[] = {
	GUEST_RUN_ARGS(GR_ROW)
};

const size_t guest_run_nargs = GUEST_RUN_NARGS;

void guest_run_defaults(struct guest_run *r)
{
	*r = (struct guest_run){ 0 };
	for (size_t i = 0; i < guest_run_nargs; i++) {
		const struct guest_run_arg *a = &guest_run_args[i];

		if (a->kind == GR_BOOL)
			*(bool *)guest_run_field(r, a) = !a->flag;
	}
}

int guest_run_parse(json_t *args, struct guest_run *r, char **err)
{
	guest_run_defaults(r);
	for (size_t i = 0; i < guest_run_nargs; i++) {
		const struct guest_run_arg *a = &guest_run_args[i];
		void *v = guest_run_field(r, a);
		int rc;

		switch (a->kind) {
		case GR_STR:
			rc = control_arg_str(args, a->key, a->required, v, err);
			break;
		case GR_SIZE:
			rc = control_arg_size(args, a->key, a->required, v, err);
			break;
		case GR_UINT:
			rc = control_arg_uint(args, a->key, a->required,
					      GUEST_RUN_UINT_MAX, v, err);
			break;
		default:
			rc = control_arg_bool(args, a->key, a->required, v, err);
			break;
		}
		if (rc)
			return rc;
	}
	return 0;
}
