/*
 * cruz_spank.c: SPANK plugin that lets srun, sbatch and salloc ask for Cruz
 * checkpointing of a job.
 *
 *   --cruz                   checkpoint this job with Cruz
 *   --cruz-interval=DURATION checkpoint every DURATION (Go syntax: 90s, 5m, 1h30m)
 *   --cruz-ranks-per-pod=K   up to K tasks of a node in one pod (shared memory)
 *   --cruz-store=DIR         keep checkpoints in DIR (absolute path)
 *   --cruz-restart=auto|never  restart from the last checkpoint after a failure
 *
 * Every --cruz-* option implies --cruz. The plugin is thin: it checks the
 * options, hands them to the job as environment variables (CRUZ_ENABLED=1,
 * CRUZ_INTERVAL, CRUZ_STORE, CRUZ_RESTART), and in each task of a --cruz
 * step has slurmstepd exec the cruz command in place of the task's program
 * (CRUZ_TASK_ARGV0 keeps the program's path). There, cruz hands the step
 * to the node's agent, which runs it as one Cruz job, one pod per task
 * (launcher/slurmtask.go, agent/slurm.go). The batch script itself is never
 * wrapped. On a node without a Cruz agent, the tasks of a --cruz step fail
 * before they exec, saying why, rather than run unprotected. The job's
 * epilog asks the node's agent to remove whatever pods of the job are left.
 *
 * plugstack.conf:
 *   required /path/to/cruz_spank.so [socket=/run/cruz/cruzd.sock]
 *                                   [cruz=/opt/cruz/bin/cruz]
 *
 * Build: cc -shared -fPIC -Wall -Wextra -Werror -o cruz_spank.so cruz_spank.c
 */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

SPANK_PLUGIN(cruz, 1);

#define CRUZ_DEFAULT_SOCKET "/run/cruz/cruzd.sock"
#define CRUZ_DEFAULT_BIN "/opt/cruz/bin/cruz"
/* How long the epilog waits for the agent to remove a job's pods. */
#define CRUZ_EPILOG_TIMEOUT_SEC 60
/* Shorter intervals would spend the job's time checkpointing. */
#define CRUZ_MIN_INTERVAL_SEC 1.0

static int cruz_enabled = 0;
static char *cruz_interval = NULL;
static char *cruz_store = NULL;
static char *cruz_restart = NULL;
static char *cruz_ranks_per_pod = NULL;
static char cruz_socket[PATH_MAX] = CRUZ_DEFAULT_SOCKET;
static char cruz_bin[PATH_MAX] = CRUZ_DEFAULT_BIN;
static int cruz_no_agent = 0; /* remote: --cruz given, agent socket missing */

static int opt_cruz(int val, const char *optarg, int remote);
static int opt_interval(int val, const char *optarg, int remote);
static int opt_store(int val, const char *optarg, int remote);
static int opt_restart(int val, const char *optarg, int remote);
static int opt_ranks_per_pod(int val, const char *optarg, int remote);

/*
 * Registered with spank_option_register() rather than exported as
 * spank_options: the exported table is not seen by sbatch and salloc.
 */
static struct spank_option cruz_options[] = {
	{ "cruz", NULL,
	  "Checkpoint this job with Cruz (needs cruzd on every node).",
	  0, 0, opt_cruz },
	{ "cruz-interval", "DURATION",
	  "Checkpoint every DURATION, e.g. 90s, 5m, 1h30m (implies --cruz).",
	  1, 0, opt_interval },
	{ "cruz-store", "DIR",
	  "Keep checkpoints in DIR, an absolute path every node sees "
	  "(implies --cruz).",
	  1, 0, opt_store },
	{ "cruz-restart", "auto|never",
	  "Restart from the last checkpoint after a failure, or not "
	  "(implies --cruz).",
	  1, 0, opt_restart },
	{ "cruz-ranks-per-pod", "K",
	  "Put up to K tasks of a node in one pod, where MPI may use shared "
	  "memory between them (implies --cruz).",
	  1, 0, opt_ranks_per_pod },
	SPANK_OPTIONS_TABLE_END
};

/*
 * Options are checked for the user where the user sees the messages: in
 * srun (local) and in sbatch/salloc (allocator). On the nodes (remote) the
 * same callbacks run again with the values the user gave.
 */
static int user_facing(void)
{
	spank_context_t ctx = spank_context();
	return ctx == S_CTX_LOCAL || ctx == S_CTX_ALLOCATOR;
}

static int set_string(char **dst, const char *val)
{
	char *s = strdup(val);
	if (s == NULL) {
		slurm_error("cruz: out of memory");
		return -1;
	}
	free(*dst);
	*dst = s;
	return 0;
}

/*
 * Parses a duration in Go's time.ParseDuration syntax, without a sign:
 * one or more decimal numbers, each with an optional fraction and a unit
 * (ns, us, µs, ms, s, m, h), such as "90s", "1.5h" or "1h30m". The Go
 * launcher parses the same string again, so both must agree.
 */
static int parse_duration(const char *s, double *secs)
{
	static const struct { const char *unit; double secs; } units[] = {
		{ "ns", 1e-9 }, { "us", 1e-6 }, { "\xc2\xb5s", 1e-6 },
		{ "\xce\xbcs", 1e-6 }, { "ms", 1e-3 }, { "s", 1 },
		{ "m", 60 }, { "h", 3600 }, { NULL, 0 }
	};
	const char *p = s;
	double total = 0;

	if (*p == '\0')
		return -1;
	/* Go takes a bare "0"; it is too short all the same. */
	if (strcmp(s, "0") == 0) {
		*secs = 0;
		return 0;
	}
	while (*p != '\0') {
		double v = 0, scale = 1;
		int digits = 0, i;

		for (; isdigit((unsigned char) *p); p++, digits++)
			v = v * 10 + (*p - '0');
		if (*p == '.')
			for (p++; isdigit((unsigned char) *p); p++, digits++)
				v += (*p - '0') * (scale /= 10);
		if (digits == 0)
			return -1;
		for (i = 0; units[i].unit != NULL; i++) {
			size_t n = strlen(units[i].unit);
			/* The table lists "ms" before "m" for this to work. */
			if (strncmp(p, units[i].unit, n) == 0)
				break;
		}
		if (units[i].unit == NULL)
			return -1;
		total += v * units[i].secs;
		p += strlen(units[i].unit);
	}
	*secs = total;
	return 0;
}

static int opt_cruz(int val, const char *optarg, int remote)
{
	(void) val;
	(void) optarg;
	(void) remote;
	cruz_enabled = 1;
	return 0;
}

static int opt_interval(int val, const char *optarg, int remote)
{
	double secs;

	(void) val;
	(void) remote;
	if (optarg == NULL || parse_duration(optarg, &secs) < 0) {
		slurm_error("cruz: --cruz-interval=%s is not a duration: give a "
			    "number with a unit, e.g. --cruz-interval=90s "
			    "(or 5m, 1h30m)", optarg ? optarg : "");
		return -1;
	}
	if (secs < CRUZ_MIN_INTERVAL_SEC) {
		slurm_error("cruz: --cruz-interval=%s is shorter than 1s: give "
			    "a longer interval, e.g. --cruz-interval=90s",
			    optarg);
		return -1;
	}
	cruz_enabled = 1;
	return set_string(&cruz_interval, optarg);
}

static int opt_store(int val, const char *optarg, int remote)
{
	struct stat st;

	(void) val;
	(void) remote;
	if (optarg == NULL || optarg[0] != '/') {
		slurm_error("cruz: --cruz-store=%s is not an absolute path: give "
			    "a directory every node sees, e.g. "
			    "--cruz-store=/shared/cruz", optarg ? optarg : "");
		return -1;
	}
	/* Where the user submits, the store should be visible too. */
	if (user_facing()) {
		if (stat(optarg, &st) < 0) {
			slurm_error("cruz: --cruz-store=%s: %s: create the "
				    "directory or give another one",
				    optarg, strerror(errno));
			return -1;
		}
		if (!S_ISDIR(st.st_mode)) {
			slurm_error("cruz: --cruz-store=%s is not a directory",
				    optarg);
			return -1;
		}
	}
	cruz_enabled = 1;
	return set_string(&cruz_store, optarg);
}

static int opt_restart(int val, const char *optarg, int remote)
{
	(void) val;
	(void) remote;
	if (optarg == NULL ||
	    (strcmp(optarg, "auto") != 0 && strcmp(optarg, "never") != 0)) {
		slurm_error("cruz: --cruz-restart=%s is neither auto nor never "
			    "(e.g. --cruz-restart=auto)", optarg ? optarg : "");
		return -1;
	}
	cruz_enabled = 1;
	return set_string(&cruz_restart, optarg);
}

/* The same bound as cruz run --ranks-per-pod (the agents' --np). */
#define CRUZ_MAX_RANKS_PER_POD 256

static int opt_ranks_per_pod(int val, const char *optarg, int remote)
{
	char *end = NULL;
	long k;

	(void) val;
	(void) remote;
	errno = 0;
	k = optarg ? strtol(optarg, &end, 10) : 0;
	if (optarg == NULL || *optarg == '\0' || *end != '\0' || errno != 0 ||
	    k < 1 || k > CRUZ_MAX_RANKS_PER_POD) {
		slurm_error("cruz: --cruz-ranks-per-pod=%s is not a number from "
			    "1 to %d: give how many tasks of a node may share a "
			    "pod, e.g. --cruz-ranks-per-pod=2",
			    optarg ? optarg : "", CRUZ_MAX_RANKS_PER_POD);
		return -1;
	}
	cruz_enabled = 1;
	return set_string(&cruz_ranks_per_pod, optarg);
}

/* A step that runs the user's tasks: not the batch script, not extern. */
static int is_job_step(spank_t sp)
{
	uint32_t step = 0;

	if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
		return 0;
	return step != SLURM_BATCH_SCRIPT && step != SLURM_EXTERN_CONT &&
	       step != SLURM_INTERACTIVE_STEP;
}

static const char *no_agent_message(void)
{
	static char msg[PATH_MAX + 512];
	char host[256] = "?";

	if (gethostname(host, sizeof(host)) < 0)
		strcpy(host, "?");
	host[sizeof(host) - 1] = '\0';
	snprintf(msg, sizeof(msg), "cruz: no cruz agent on node %s (socket %s): "
		 "start cruzd on that node (as root) or drop --cruz",
		 host, cruz_socket);
	return msg;
}

/* Reads the plugin's arguments from plugstack.conf. */
static int parse_args(int ac, char **av)
{
	int i;

	for (i = 0; i < ac; i++) {
		char *dst = NULL;
		const char *val = NULL;

		if (strncmp(av[i], "socket=", 7) == 0 && av[i][7] == '/') {
			dst = cruz_socket;
			val = av[i] + 7;
		} else if (strncmp(av[i], "cruz=", 5) == 0 && av[i][5] == '/') {
			dst = cruz_bin;
			val = av[i] + 5;
		} else {
			slurm_error("cruz: plugstack.conf: unknown argument "
				    "\"%s\" (known: socket=/ABSOLUTE/PATH, "
				    "cruz=/ABSOLUTE/PATH)", av[i]);
			return -1;
		}
		if (strlen(val) >= PATH_MAX) {
			slurm_error("cruz: plugstack.conf: %s is too long", av[i]);
			return -1;
		}
		strcpy(dst, val);
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_context_t ctx = spank_context();
	int i;

	if (parse_args(ac, av) < 0)
		return -1;
	/* slurmd and prolog/epilog contexts take no options. */
	if (ctx != S_CTX_LOCAL && ctx != S_CTX_REMOTE && ctx != S_CTX_ALLOCATOR)
		return 0;
	for (i = 0; cruz_options[i].name != NULL; i++) {
		if (spank_option_register(sp, &cruz_options[i]) != ESPANK_SUCCESS) {
			slurm_error("cruz: cannot register option --%s",
				    cruz_options[i].name);
			return -1;
		}
	}
	return 0;
}

static int setenv_job(spank_t sp, const char *var, const char *val)
{
	spank_err_t rc;

	if (val == NULL)
		return 0;
	rc = spank_setenv(sp, var, val, 1);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("cruz: cannot set %s in the job's environment: %s",
			    var, spank_strerror(rc));
		return -1;
	}
	return 0;
}

/* Reads a whole file of at most max bytes; NULL on failure. */
static char *read_file(const char *path, size_t max, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = malloc(max + 1);

	if (f == NULL || buf == NULL) {
		if (f != NULL)
			fclose(f);
		free(buf);
		return NULL;
	}
	*len = fread(buf, 1, max + 1, f);
	fclose(f);
	if (*len == 0 || *len > max) {
		free(buf);
		return NULL;
	}
	return buf;
}

/*
 * srun of a --cruz step (local context, options parsed, nothing allocated
 * or launched yet): the step must outlive the failure of one of its nodes,
 * since Cruz rolls its job back onto the step's other nodes. slurmctld
 * kills a whole step when one of its nodes fails ("Killing StepId=J.S due
 * to failed node N") unless the step is no-kill, even in a job submitted
 * with --no-kill; a no-kill step only loses that node's tasks, which srun
 * counts as ended. srun reads SLURM_NO_KILL as it parses its options, which
 * it has done by now, so it is exec'd again, with the same arguments and
 * SLURM_NO_KILL=set. A SLURM_NO_KILL already set (the user's choice, or
 * this exec) is left alone; an explicit --no-kill=off still wins, as an
 * option beats the environment. In a job without --no-kill nothing changes:
 * Slurm ends (and may requeue) the whole job when one of its nodes fails.
 */
static void make_step_no_kill(void)
{
	size_t len = 0, i, n = 0;
	char *buf, **argv;

	if (getenv("SLURM_NO_KILL") != NULL)
		return;
	buf = read_file("/proc/self/cmdline", 1 << 20, &len);
	if (buf == NULL) {
		slurm_error("cruz: cannot read srun's command line: the step is "
			    "killed if one of its nodes fails (srun --no-kill "
			    "avoids that)");
		return;
	}
	buf[len] = '\0';
	for (i = 0; i < len; i++)
		n += buf[i] == '\0';
	argv = calloc(n + 1, sizeof(char *));
	if (argv == NULL) {
		free(buf);
		return;
	}
	for (i = 0, n = 0; i < len; i += strlen(buf + i) + 1)
		argv[n++] = buf + i;
	if (setenv("SLURM_NO_KILL", "set", 1) == 0) {
		slurm_debug("cruz: srun --cruz: running srun again with "
			    "SLURM_NO_KILL=set");
		execv("/proc/self/exe", argv);
		slurm_error("cruz: exec srun again with SLURM_NO_KILL=set: %s: "
			    "the step is killed if one of its nodes fails "
			    "(srun --no-kill avoids that)", strerror(errno));
		unsetenv("SLURM_NO_KILL");
	}
	free(argv);
	free(buf);
}

/*
 * Once the options are known: in srun, make a --cruz step no-kill; on a
 * node (remote), check for the agent and hand the options to the job's
 * tasks. A missing agent is reported to the node's log here, and to the
 * user by each task (slurm_spank_task_init): failing here would only show
 * "Plugin initialization failed" to the user, and srun would even exit 0.
 */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	struct stat st;

	(void) ac;
	(void) av;
	if (spank_context() == S_CTX_LOCAL && cruz_enabled)
		make_step_no_kill();
	if (!spank_remote(sp) || !cruz_enabled)
		return 0;
	if (stat(cruz_socket, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		cruz_no_agent = 1;
		slurm_error("%s", no_agent_message());
		return 0;
	}
	if (setenv_job(sp, "CRUZ_ENABLED", "1") < 0 ||
	    setenv_job(sp, "CRUZ_INTERVAL", cruz_interval) < 0 ||
	    setenv_job(sp, "CRUZ_STORE", cruz_store) < 0 ||
	    setenv_job(sp, "CRUZ_RESTART", cruz_restart) < 0 ||
	    setenv_job(sp, "CRUZ_RANKS_PER_POD", cruz_ranks_per_pod) < 0)
		return -1;
	return 0;
}

/*
 * In each task, as the user, just before it execs the job's program: a
 * --cruz task without an agent ends here with the reason on its stderr,
 * which srun and the job's output show, instead of running unprotected.
 */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	int argc = 0;
	char **argv = NULL;
	char *wrapper;

	(void) ac;
	(void) av;
	if (!spank_remote(sp) || !cruz_enabled || !is_job_step(sp))
		return 0;
	if (cruz_no_agent) {
		fprintf(stderr, "%s\n", no_agent_message());
		fflush(stderr);
		return -1;
	}
	if (access(cruz_bin, X_OK) < 0) {
		fprintf(stderr, "cruz: %s: %s: install cruz on this node or set "
			"cruz=/PATH in plugstack.conf\n", cruz_bin, strerror(errno));
		fflush(stderr);
		return -1;
	}
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS ||
	    argc < 1 || argv == NULL || argv[0] == NULL) {
		fprintf(stderr, "cruz: cannot read the task's command line\n");
		fflush(stderr);
		return -1;
	}
	/*
	 * slurmstepd execs argv[0] (already a full path) with argv once this
	 * returns: make that cruz, which finds the program's path in
	 * CRUZ_TASK_ARGV0 and its arguments in its own.
	 */
	wrapper = strdup(cruz_bin);
	if (wrapper == NULL ||
	    setenv_job(sp, "CRUZ_TASK_ARGV0", argv[0]) < 0 ||
	    setenv_job(sp, "CRUZ_SOCKET", cruz_socket) < 0) {
		fprintf(stderr, "cruz: cannot hand the task to cruz\n");
		fflush(stderr);
		return -1;
	}
	argv[0] = wrapper;
	return 0;
}

/*
 * Runs as root in each task before it drops privileges: the one place for
 * privileged per-task work (e.g. handing the task to the root-only agent).
 * The launcher does that work for now, so this only logs.
 */
int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	uint32_t job = 0, task = 0;

	(void) ac;
	(void) av;
	if (!spank_remote(sp) || !cruz_enabled)
		return 0;
	spank_get_item(sp, S_JOB_ID, &job);
	spank_get_item(sp, S_TASK_GLOBAL_ID, &task);
	slurm_debug("cruz: job %u task %u: checkpointing through %s",
		    job, task, cruz_socket);
	return 0;
}

/*
 * Runs `cruz slurm-end JOB` as root, bounded in time: the node's agent
 * removes whatever pods of the job's --cruz steps are still on the node
 * (their first task normally ends them at scancel or requeue; this catches
 * a task killed before it could). Their checkpoints stay, for a requeue.
 */
static int run_slurm_end(uint32_t job)
{
	char id[32], sock_arg[PATH_MAX + 16];
	pid_t pid;
	int status, waited;

	snprintf(id, sizeof(id), "%u", job);
	snprintf(sock_arg, sizeof(sock_arg), "--socket=%s", cruz_socket);
	pid = fork();
	if (pid < 0) {
		slurm_error("cruz: epilog of job %u: fork: %s", job, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		char *args[] = { cruz_bin, sock_arg, "slurm-end", "--reason",
				 "the Slurm job ended (epilog)", id, NULL };
		execv(cruz_bin, args);
		_exit(127);
	}
	for (waited = 0; waited < CRUZ_EPILOG_TIMEOUT_SEC * 10; waited++) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				return 0;
			slurm_error("cruz: epilog of job %u: %s slurm-end failed "
				    "(status %d): see the cruzd log", job,
				    cruz_bin, status);
			return -1;
		}
		if (r < 0 && errno != EINTR)
			return -1;
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	slurm_error("cruz: epilog of job %u: the agent did not answer within "
		    "%d s: check cruzd on this node", job, CRUZ_EPILOG_TIMEOUT_SEC);
	return -1;
}

/*
 * The job's epilog, as root on each of its nodes. A failure here would
 * drain the node, so problems are logged but not returned.
 */
int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	uint32_t job = 0;
	struct stat st;
	spank_err_t rc;

	/* slurm_spank_init is not called for the epilog: read them here. */
	if (parse_args(ac, av) < 0)
		return 0;
	rc = spank_get_item(sp, S_JOB_ID, &job);
	if (rc != ESPANK_SUCCESS || job == 0) {
		slurm_error("cruz: epilog: no job id: %s", spank_strerror(rc));
		return 0;
	}
	/* No agent, no pods: nothing to clean. */
	if (stat(cruz_socket, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		slurm_debug("cruz: epilog of job %u: no agent at %s", job, cruz_socket);
		return 0;
	}
	if (access(cruz_bin, X_OK) < 0) {
		slurm_error("cruz: epilog of job %u: %s: %s", job, cruz_bin, strerror(errno));
		return 0;
	}
	if (run_slurm_end(job) == 0)
		slurm_debug("cruz: epilog of job %u: done", job);
	return 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void) sp;
	(void) ac;
	(void) av;
	free(cruz_interval);
	free(cruz_store);
	free(cruz_restart);
	free(cruz_ranks_per_pod);
	cruz_interval = cruz_store = cruz_restart = cruz_ranks_per_pod = NULL;
	return 0;
}
