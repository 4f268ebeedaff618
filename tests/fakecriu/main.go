// Command fakecriu is a test double for CRIU, used by the end-to-end tests
// (tests/e2e/errors_test.go) to check that cruzd refuses a CRIU that is too
// old. It is never a working CRIU: it claims to be CRIU 3.17.1 and does
// nothing else.
//
// As `criu swrk 3` it reads one RPC request (a CriuReq, see go-criu's rpc
// package) from the SOCK_SEQPACKET socket at fd 3 and answers a VERSION
// request with success and version 3.17.1; any other request fails. As
// `criu --version` it prints what CRIU 3.17.1 would.
package main

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"
)

const major, minor, sublevel = 3, 17, 1

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-V") {
		fmt.Printf("Version: %d.%d.%d\n", major, minor, sublevel)
		return
	}
	if len(os.Args) != 3 || os.Args[1] != "swrk" || os.Args[2] != "3" {
		fmt.Fprintf(os.Stderr, "fakecriu: test double: only `swrk 3` and `--version` are supported, not %q\n", os.Args[1:])
		os.Exit(1)
	}
	sock := os.NewFile(3, "criu-rpc")
	buf := make([]byte, 1<<20)
	n, err := sock.Read(buf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakecriu: read request: %v\n", err)
		os.Exit(1)
	}
	req := &rpc.CriuReq{}
	if err := proto.Unmarshal(buf[:n], req); err != nil {
		fmt.Fprintf(os.Stderr, "fakecriu: decode request: %v\n", err)
		os.Exit(1)
	}
	resp := &rpc.CriuResp{Type: req.Type, Success: proto.Bool(false),
		CrErrmsg: proto.String("fakecriu is a test double: it answers only VERSION")}
	if req.GetType() == rpc.CriuReqType_VERSION {
		resp.Success = proto.Bool(true)
		resp.CrErrmsg = nil
		resp.Version = &rpc.CriuVersion{MajorNumber: proto.Int32(major), MinorNumber: proto.Int32(minor), Sublevel: proto.Int32(sublevel)}
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakecriu: encode answer: %v\n", err)
		os.Exit(1)
	}
	if _, err := sock.Write(b); err != nil {
		fmt.Fprintf(os.Stderr, "fakecriu: send answer: %v\n", err)
		os.Exit(1)
	}
}
