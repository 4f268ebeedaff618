package criu

import (
	"errors"
	"os"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// note is one notification fakeCRIU sends.
type note struct {
	script string
	pid    int32 // 0: none
}

// fakeCRIU plays CRIU's side of a request of type typ with notifications:
// it sends one notification per note, records the verdicts, then answers
// (success only if every verdict was).
func fakeCRIU(t *testing.T, sock *os.File, typ rpc.CriuReqType, notes []note) <-chan []bool {
	verdicts := make(chan []bool, 1)
	go func() {
		buf := make([]byte, 1<<16)
		var got []bool
		defer func() { verdicts <- got }()
		if _, err := sock.Read(buf); err != nil {
			return
		}
		ok := true
		for _, nt := range notes {
			cn := &rpc.CriuNotify{Script: proto.String(nt.script)}
			if nt.pid != 0 {
				cn.Pid = proto.Int32(nt.pid)
			}
			b, _ := proto.Marshal(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: proto.Bool(true), Notify: cn})
			if _, err := sock.Write(b); err != nil {
				return
			}
			n, err := sock.Read(buf)
			if err != nil {
				return
			}
			req := &rpc.CriuReq{}
			if proto.Unmarshal(buf[:n], req) != nil || req.GetType() != rpc.CriuReqType_NOTIFY {
				return
			}
			got = append(got, req.GetNotifySuccess())
			ok = ok && req.GetNotifySuccess()
		}
		b, _ := proto.Marshal(&rpc.CriuResp{Type: typ.Enum(), Success: proto.Bool(ok), CrErrmsg: proto.String("script failed"),
			Restore: &rpc.CriuRestoreResp{Pid: proto.Int32(4321)}})
		_, _ = sock.Write(b)
	}()
	return verdicts
}

func socketPair(t *testing.T) (*os.File, *os.File) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	a, b := os.NewFile(uintptr(fds[0]), "agent"), os.NewFile(uintptr(fds[1]), "criu")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Every notification is answered; the hook's verdict on post-dump is what
// CRIU hears, and a failed hook fails the dump.
func TestExchangeAnswersNotifications(t *testing.T) {
	req := &rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(3), NotifyScripts: proto.Bool(true)}}
	for _, c := range []struct {
		hook error
		want []bool
	}{{nil, []bool{true, true}}, {errors.New("cannot save a file"), []bool{true, false}}} {
		agent, criu := socketPair(t)
		verdicts := fakeCRIU(t, criu, rpc.CriuReqType_DUMP, []note{{script: "pre-dump"}, {script: "post-dump"}})
		var heard []string
		resp, err := exchange(agent, req, func(script string, _ int) error {
			heard = append(heard, script)
			if script == "post-dump" {
				return c.hook
			}
			return nil
		})
		assert.Equal(t, []string{"pre-dump", "post-dump"}, heard)
		assert.Equal(t, c.want, <-verdicts)
		if c.hook == nil {
			require.NoError(t, err)
			assert.Equal(t, rpc.CriuReqType_DUMP, resp.GetType())
		} else {
			require.Error(t, err)
		}
	}
}

// A restore with a post-restore hook: the hook gets the restored root's pid
// from the notification, and its failure is what CRIU hears (CRIU then
// kills the restored processes and fails the restore).
func TestExchangePostRestore(t *testing.T) {
	req := &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(3), NotifyScripts: proto.Bool(true)}}
	notes := []note{{script: "setup-namespaces", pid: 4321}, {script: "post-restore", pid: 4321}, {script: "pre-resume"}}
	for _, c := range []struct {
		hook error
		want []bool
	}{{nil, []bool{true, true, true}}, {errors.New("restored pod holds /root/x opened for writing"), []bool{true, false, true}}} {
		agent, criu := socketPair(t)
		verdicts := fakeCRIU(t, criu, rpc.CriuReqType_RESTORE, notes)
		var hookPid []int
		resp, err := exchange(agent, req, func(script string, pid int) error {
			if script == "post-restore" {
				hookPid = append(hookPid, pid)
				return c.hook
			}
			return nil
		})
		assert.Equal(t, []int{4321}, hookPid, "the hook runs once, with the restored root's pid")
		assert.Equal(t, c.want, <-verdicts)
		if c.hook == nil {
			require.NoError(t, err)
			assert.Equal(t, rpc.CriuReqType_RESTORE, resp.GetType())
			assert.Equal(t, int32(4321), resp.GetRestore().GetPid())
		} else {
			require.Error(t, err)
		}
	}
}
