//go:build linux

package slurmcluster

import (
	"fmt"
	"path/filepath"
	"strings"
)

// credExpireSec is the lifetime of job step credentials: long enough for a
// step to launch on nodes that share one machine, short so that requeued
// jobs start again within seconds.
const credExpireSec = 5

// slurmdTimeoutSec is Slurm's SlurmdTimeout: how long a node may not answer
// slurmctld before it is DOWN.
const slurmdTimeoutSec = 5

// slurmConf is the cluster's slurm.conf. host is the root namespace's short
// hostname, dir the state directory, plugstack the plugstack.conf to use.
func slurmConf(o Options, host, dir, plugstack string) string {
	p := func(elem ...string) string { return filepath.Join(append([]string{dir}, elem...)...) }
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# slurm.conf of a Slurm cluster made by cruz (internal/slurmcluster); every")
	w("# daemon and client of it needs SLURM_CONF=%s.", p(confName))
	w("ClusterName=%s", o.ClusterName)
	w("SlurmctldHost=%s(%s)", host, o.ControllerAddr)
	// Not Slurm's default ports, so that a site's own Slurm on this host
	// is not disturbed.
	w("SlurmctldPort=%d", o.SlurmctldPort)
	w("SlurmdPort=%d", o.SlurmdPort)
	w("SlurmUser=root")
	w("SlurmdUser=root")
	w("AuthType=auth/munge")
	w("CredType=cred/munge")
	// One munged serves the controller, every node and every client.
	// cred_expire is also how long a requeued job waits before it may
	// start again (Slurm's default: 120 s).
	w("AuthInfo=socket=%s,cred_expire=%d", p(runDirName, mungeSocket), credExpireSec)
	w("StateSaveLocation=%s", p(spoolDirName, "slurmctld"))
	w("SlurmdSpoolDir=%s", p(spoolDirName, "%n"))
	// Slurm's own pid files; ours, for StopDir, are in Dir/pids.
	w("SlurmctldPidFile=%s", p(runDirName, "slurmctld.pid"))
	w("SlurmdPidFile=%s", p(runDirName, "slurmd-%n.pid"))
	w("SlurmctldLogFile=%s", p(logDirName, "slurmctld.log"))
	// slurmstepd logs here too, which a daemon's stderr would not catch.
	w("SlurmdLogFile=%s", p(logDirName, "slurmd-%n.log"))
	w("SlurmctldDebug=info")
	w("SlurmdDebug=info")
	// Never the host's /etc/slurm/plugstack.conf.
	w("PlugStackConfig=%s", plugstack)
	// Steps are tracked and confined with cgroups, as on most real
	// clusters, so that the limits Slurm gives a step reach its pods. The
	// nodes share one kernel: each slurmd sees its own subtree of every
	// hierarchy (node-init.sh), so they never fight over /slurm.
	w("ProctrackType=proctrack/cgroup")
	w("TaskPlugin=task/cgroup")
	w("JobAcctGatherType=jobacct_gather/none")
	w("AccountingStorageType=accounting_storage/none")
	w("JobCompType=jobcomp/none")
	w("MpiDefault=none")
	w("SwitchType=switch/none")
	w("SelectType=select/cons_tres")
	// Memory is a resource too, so that --mem is the step's limit
	// (task/cgroup); a job that asks for none gets its CPUs' share.
	w("SelectTypeParameters=CR_Core_Memory")
	w("DefMemPerCPU=%d", max(1, o.MemoryPerNodeMB/o.CPUsPerNode))
	// Without it sbatch jobs wait up to 3 s before they are scheduled.
	w("SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1")
	// A node that comes back registers as idle instead of staying down.
	w("ReturnToService=2")
	// A node that dies (cruz cluster fail) is noticed within seconds, not
	// after Slurm's default 300 s: slurmctld pings every SlurmdTimeout/3
	// and marks a node DOWN that has not answered for SlurmdTimeout, and
	// only then ends or shrinks the jobs on it (requeue, --no-kill).
	w("SlurmdTimeout=%d", slurmdTimeoutSec)
	// The nodes share this machine's CPUs: trust the CPU counts below
	// rather than the hardware slurmd sees.
	w("SlurmdParameters=config_overrides")
	w("KillWait=5")
	// Batch jobs may be requeued (scontrol requeue, a failed node) unless
	// they say --no-requeue: Cruz resumes them from their last checkpoint.
	w("JobRequeue=1")
	w("InactiveLimit=0")
	w("MailProg=/bin/true")
	for _, n := range o.Nodes {
		// One socket of CPUsPerNode cores, so that the node has exactly
		// that many CPUs whatever the hardware.
		w("NodeName=%s NodeAddr=%s NodeHostname=%s CPUs=%d Sockets=1 CoresPerSocket=%d ThreadsPerCore=1 RealMemory=%d State=UNKNOWN",
			n.Name, n.Addr, n.Name, o.CPUsPerNode, o.CPUsPerNode, o.MemoryPerNodeMB)
	}
	w("PartitionName=%s Nodes=ALL Default=YES MaxTime=INFINITE State=UP", o.ClusterName)
	return b.String()
}

// cgroupConf keeps slurmd from reading the host's /etc/slurm/cgroup.conf
// (Slurm looks for it next to slurm.conf) and confines every step to its
// CPUs and memory (--cpus-per-task, --mem; swap counts as memory), which
// Cruz puts a step's pods under too. cgroups here are v1 (see the field notes).
const cgroupConf = `# cgroup.conf of a Slurm cluster made by cruz (internal/slurmcluster).
CgroupPlugin=cgroup/v1
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
`

// nodeInit becomes a node's slurmd. It runs as the first process of the
// node's new UTS and mount namespaces (unshare) inside the node's network
// namespace (nsenter), so its mounts and hostname stay the node's own.
const nodeInit = `#!/bin/sh
# node-init.sh NODE SLURM_CONF CGROUP_SAVE_POINT SLURMD CGROUP_DIR, written by
# cruz (internal/slurmcluster): sets up a Slurm node's namespaces and execs
# slurmd.
set -eu
# fd 3 is the network namespace nsenter entered: slurmd needs no copy of it.
exec 3<&-
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
node=$1 conf=$2 save=$3 slurmd=$4 cgdir=$5
# The node's hostname (this UTS namespace is the node's alone).
printf '%s' "$node" >/proc/sys/kernel/hostname
# /sys as inherited shows the root network namespace's interfaces; a sysfs
# mounted here shows the node's. Remounting /sys would also hide the cgroup
# hierarchies under it, which slurmd 22.05 always initialises, so they are
# moved aside and back. (ip netns exec remounts /sys without that, and
# slurmd then fails.)
mount --rbind /sys/fs/cgroup "$save"
umount -l /sys
mount -t sysfs sysfs /sys
mount --move "$save" /sys/fs/cgroup
# Every node's slurmd makes /slurm/uid_U/job_J/step_S in each v1 hierarchy;
# on one kernel they would all make the same ones. So each node gets its own
# cgroup CGROUP_DIR in every hierarchy, this shell moves into it, the node's
# mount namespace sees that cgroup as the hierarchy's root (a bind mount),
# and slurmd runs in a cgroup namespace rooted there, so that its tasks'
# /proc/PID/cgroup agree with what it mounted.
for h in /sys/fs/cgroup/*; do
	[ "$(stat -f -c %T "$h")" = cgroupfs ] || continue
	[ -e "$h/cgroup.procs" ] || continue
	d=$h
	for part in $(printf '%s' "$cgdir" | tr / ' '); do
		mkdir -p "$d/$part"
		# A new cpuset has no CPUs or memory nodes until given its parent's.
		if [ -e "$d/cpuset.cpus" ] && [ -z "$(cat "$d/$part/cpuset.cpus")" ]; then
			cat "$d/cpuset.cpus" >"$d/$part/cpuset.cpus"
			cat "$d/cpuset.mems" >"$d/$part/cpuset.mems"
		fi
		d=$d/$part
	done
	echo $$ >"$d/cgroup.procs"
	mount --bind "$d" "$h"
done
exec unshare --cgroup -- "$slurmd" -D -N "$node" -f "$conf"
`
