package store

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Benchmarks run only with -bench, e.g.
//
//	go test -run '^$' -bench 256MiB ./internal/store/
//
// They commit (checksum, fix permissions, fsync, rename) and load (verify) a
// checkpoint of 256 MiB, in one pod or four, and report MB/s (b.SetBytes).

const benchBytes = 256 << 20

func benchData(b *testing.B, size int) []byte {
	b.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	return data
}

func benchPods(b *testing.B, p *Pending, pods int, data []byte) *Manifest {
	b.Helper()
	m := &Manifest{}
	for i := range pods {
		name := fmt.Sprintf("rank%d", i)
		dir, err := p.PodDir(name)
		require.NoError(b, err)
		require.NoError(b, os.WriteFile(filepath.Join(dir, "pages-1.img"), data, 0o600))
		m.Pods = append(m.Pods, PodImage{Name: name, Rank: i})
	}
	return m
}

func BenchmarkCommit256MiB(b *testing.B) {
	if testing.Short() {
		b.Skip("SKIPPED: writes 256 MiB per iteration; not in -short mode")
	}
	for _, pods := range []int{1, 4} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			s := openTestStore(b)
			data := benchData(b, benchBytes/pods)
			b.SetBytes(benchBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				p, err := s.Begin("bench", Owner{1000, 1000})
				require.NoError(b, err)
				m := benchPods(b, p, pods, data)
				b.StartTimer()
				_, err = p.Commit(m)
				b.StopTimer()
				require.NoError(b, err)
				require.NoError(b, s.Delete("bench", m.ID, Owner{1000, 1000}))
				b.StartTimer()
			}
		})
	}
}

func BenchmarkLoad256MiB(b *testing.B) {
	if testing.Short() {
		b.Skip("SKIPPED: writes 256 MiB; not in -short mode")
	}
	for _, pods := range []int{1, 4} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			s := openTestStore(b)
			p, err := s.Begin("bench", Owner{1000, 1000})
			require.NoError(b, err)
			m := benchPods(b, p, pods, benchData(b, benchBytes/pods))
			_, err = p.Commit(m)
			require.NoError(b, err)
			b.SetBytes(benchBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, _, err := s.Load("bench", m.ID)
				require.NoError(b, err)
			}
		})
	}
}
