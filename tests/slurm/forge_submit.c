/* ttpred_forge_submit: a tiny libslurm client that submits batch jobs with a
 * hand-made spank_job_env, bypassing the SPANK plugin, as any user could. Used by
 * tests/slurm/cluster-tests.sh to check that job_submit/ttpred treats these values
 * as untrusted, and for the stress test.
 *
 *   ttpred_forge_submit [-n COUNT] [-H] [-p PARTITION] [-t MINUTES] [-A ACCOUNT]
 *                       [NAME=VALUE...]
 *
 * Each NAME=VALUE goes into spank_job_env as given. Prints one line per job:
 * "job ID" and, if any, "msg: <job_submit user message>". Exit 0 when every
 * submission succeeded, 1 otherwise. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>

int main(int argc, char **argv)
{
	int count = 1, hold = 0, opt, i, failures = 0;
	char *partition = NULL, *account = NULL;
	long minutes = -1;
	char *env[] = { "PATH=/usr/bin:/bin", NULL };

	while ((opt = getopt(argc, argv, "n:Hp:t:A:")) != -1) {
		switch (opt) {
		case 'n': count = atoi(optarg); break;
		case 'H': hold = 1; break;
		case 'p': partition = optarg; break;
		case 't': minutes = atol(optarg); break;
		case 'A': account = optarg; break;
		default:
			fprintf(stderr, "usage: %s [-n COUNT] [-H] [-p PARTITION] "
				"[-t MINUTES] [-A ACCOUNT] [NAME=VALUE...]\n", argv[0]);
			return 2;
		}
	}
	slurm_init(NULL);
	for (i = 0; i < count; i++) {
		job_desc_msg_t desc;
		submit_response_msg_t *resp = NULL;

		slurm_init_job_desc_msg(&desc);
		desc.name = "ttpred-forged";
		desc.script = "#!/bin/sh\nsleep 1\n";
		desc.user_id = getuid();
		desc.group_id = getgid();
		desc.min_nodes = 1;
		desc.work_dir = "/tmp";
		desc.std_out = "/dev/null";
		desc.std_err = "/dev/null";
		desc.environment = env;
		desc.env_size = 1;
		desc.partition = partition;
		desc.account = account;
		if (minutes >= 0)
			desc.time_limit = (uint32_t) minutes;
		if (hold)
			desc.priority = 0;
		desc.spank_job_env = argv + optind;
		desc.spank_job_env_size = (uint32_t) (argc - optind);
		if (slurm_submit_batch_job(&desc, &resp) != SLURM_SUCCESS) {
			/* errno, not slurm_get_errno() (gone in 24.11; it returned errno) */
			printf("error: %s\n", slurm_strerror(errno));
			failures++;
			continue;
		}
		printf("job %u\n", resp->job_id);
		if (resp->job_submit_user_msg)
			printf("msg: %s\n", resp->job_submit_user_msg);
		slurm_free_submit_response_response_msg(resp);
	}
	slurm_fini();
	return failures ? 1 : 0;
}
