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

// fakeCRIU plays CRIU's side of a dump with notifications: it sends one
// notification per script, records the verdicts, then answers.
func fakeCRIU(t *testing.T, sock *os.File, scripts []string) <-chan []bool {
	verdicts := make(chan []bool, 1)
	go func() {
		buf := make([]byte, 1<<16)
		var got []bool
		defer func() { verdicts <- got }()
		if _, err := sock.Read(buf); err != nil {
			return
		}
		ok := true
		for _, s := range scripts {
			b, _ := proto.Marshal(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: proto.Bool(true), Notify: &rpc.CriuNotify{Script: proto.String(s)}})
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
		b, _ := proto.Marshal(&rpc.CriuResp{Type: rpc.CriuReqType_DUMP.Enum(), Success: proto.Bool(ok), CrErrmsg: proto.String("post-dump script failed")})
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
		verdicts := fakeCRIU(t, criu, []string{"pre-dump", "post-dump"})
		var heard []string
		resp, err := exchange(agent, req, func(script string) error {
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
