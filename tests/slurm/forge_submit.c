/* ttpred_forge_submit: a tiny libslurm client that submits batch jobs with a
 * hand-made spank_job_env, bypassing the SPANK plugin, as any user could. Used by
 * tests/slurm/cluster-tests.sh to check that job_submit/ttpred treats these values
 * as untrusted, and for the stress test.
 *
 *   ttpred_forge_submit [-n COUNT] [-H] [-p PARTITION] [-t MINUTES] [-A ACCOUNT]
 *                       [-g TRES_PER_NODE] [-a ARRAY] [-u UID] [-J NAME]
 *                       [-L NAME_LENGTH] [-F FLOOD_COUNT] [NAME=VALUE...]
 *
 * -g: job_desc->tres_per_node (e.g. gres:gpu:2 on 22.05, gres/gpu:2 on 23.02+);
 * -a: job_desc->array_inx; -u: submit for that uid (root only); -J: job name
 * (C escapes \n and \t are expanded); -L: the name padded with 'n' to this length;
 * -F: append FLOOD_COUNT copies of "TTPRED_SECONDS=x" to the job control
 * environment (the log-flood test).
 *
 * Each NAME=VALUE goes into spank_job_env as given. Prints one line per job:
 * "job ID" and, if any, "msg: <job_submit user message>". Exit 0 when every
 * submission succeeded, 1 otherwise. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pwd.h>

#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>

int main(int argc, char **argv)
{
	int count = 1, hold = 0, opt, i, failures = 0;
	char *partition = NULL, *account = NULL, *tres = NULL, *array = NULL;
	char *name = "ttpred-forged";
	long minutes = -1, name_len = 0, flood = 0, uid = -1;
	char **senv;
	uint32_t senv_size;
	char *env[] = { "PATH=/usr/bin:/bin", NULL };

	while ((opt = getopt(argc, argv, "n:Hp:t:A:g:a:u:J:L:F:")) != -1) {
		switch (opt) {
		case 'n': count = atoi(optarg); break;
		case 'H': hold = 1; break;
		case 'p': partition = optarg; break;
		case 't': minutes = atol(optarg); break;
		case 'A': account = optarg; break;
		case 'g': tres = optarg; break;
		case 'a': array = optarg; break;
		case 'u': uid = atol(optarg); break;
		case 'J': name = optarg; break;
		case 'L': name_len = atol(optarg); break;
		case 'F': flood = atol(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n COUNT] [-H] [-p PARTITION] "
				"[-t MINUTES] [-A ACCOUNT] [-g TRES] [-a ARRAY] [-u UID] "
				"[-J NAME] [-L LEN] [-F FLOOD] [NAME=VALUE...]\n", argv[0]);
			return 2;
		}
	}
	{	/* name: expand \n and \t, pad to name_len */
		size_t n = strlen(name), len = (size_t) name_len > n ? (size_t) name_len : n, j = 0;
		char *buf = malloc(len + 1);
		for (i = 0; name[i]; i++) {
			if (name[i] == '\\' && name[i + 1] == 'n') { buf[j++] = '\n'; i++; }
			else if (name[i] == '\\' && name[i + 1] == 't') { buf[j++] = '\t'; i++; }
			else buf[j++] = name[i];
		}
		while (j < len) buf[j++] = 'n';
		buf[j] = 0;
		name = buf;
	}
	senv_size = (uint32_t) (argc - optind) + (uint32_t) (flood > 0 ? flood : 0);
	senv = calloc(senv_size + 1, sizeof(char *));
	for (i = 0; i < argc - optind; i++)
		senv[i] = argv[optind + i];
	for (; i < (int) senv_size; i++)
		senv[i] = "TTPRED_SECONDS=x";
	slurm_init(NULL);
	for (i = 0; i < count; i++) {
		job_desc_msg_t desc;
		submit_response_msg_t *resp = NULL;

		slurm_init_job_desc_msg(&desc);
		desc.name = name;
		desc.script = "#!/bin/sh\nsleep 1\n";
		desc.user_id = uid >= 0 ? (uint32_t) uid : getuid();
		desc.group_id = getgid();
		if (uid >= 0) {
			struct passwd *pw = getpwuid((uid_t) uid);
			if (pw)
				desc.group_id = pw->pw_gid;
		}
		desc.min_nodes = 1;
		desc.work_dir = "/tmp";
		desc.std_out = "/dev/null";
		desc.std_err = "/dev/null";
		desc.environment = env;
		desc.env_size = 1;
		desc.partition = partition;
		desc.account = account;
		desc.tres_per_node = tres;
		desc.array_inx = array;
		if (minutes >= 0)
			desc.time_limit = (uint32_t) minutes;
		if (hold)
			desc.priority = 0;
		desc.spank_job_env = senv;
		desc.spank_job_env_size = senv_size;
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
