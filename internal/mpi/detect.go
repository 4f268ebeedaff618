package mpi

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Kind is an MPI implementation: which launcher starts a job's ranks.
type Kind string

const (
	// Auto asks for the MPI the program links (Detect).
	Auto Kind = "auto"
	// MPICH is MPICH with its hydra process manager (mpiexec.hydra).
	MPICH Kind = "mpich"
	// OpenMPI is Open MPI with its ORTE runtime (mpirun.openmpi, orted).
	OpenMPI Kind = "openmpi"
)

// Kinds lists the MPIs Cruz can launch, in the order they are shown.
var Kinds = []Kind{MPICH, OpenMPI}

// ParseKind reads an --mpi (or CRUZ_MPI) value; "" is Auto.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(s))); k {
	case "":
		return Auto, nil
	case Auto, MPICH, OpenMPI:
		return k, nil
	case "open-mpi", "ompi":
		return OpenMPI, nil
	}
	return "", fmt.Errorf("%q is not an MPI Cruz knows: give auto, mpich or openmpi", s)
}

// Library is the shared library (soname) by which a program is known to
// use kind.
func (k Kind) Library() string {
	switch k {
	case MPICH:
		return "libmpich.so.12"
	case OpenMPI:
		return "libmpi.so.40"
	}
	return ""
}

// Name is how the user sees kind.
func (k Kind) Name() string {
	switch k {
	case MPICH:
		return "MPICH"
	case OpenMPI:
		return "Open MPI"
	}
	return string(k)
}

// sonames maps the MPI libraries programs link to their MPI. Debian's
// MPICH also installs libmpi.so.12 for programs linked as "-lmpi".
var sonames = map[string]Kind{
	"libmpich.so.12": MPICH,
	"libmpi.so.12":   MPICH,
	"libmpi.so.40":   OpenMPI,
}

// defaultLibDirs are the directories the dynamic loader searches on Debian
// (ld.so.conf's multiarch directories and the defaults).
var defaultLibDirs = []string{"/usr/local/lib", "/usr/local/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
	"/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// maxLibs bounds how many shared objects Detect opens for one program.
const maxLibs = 200

// ErrNoMPI says that a program links no MPI library.
var ErrNoMPI = errors.New("links no MPI library")

// Detect finds the MPI the program at path links: it reads the ELF dynamic
// section of the program and of the libraries it needs, transitively, as
// the loader would find them (RPATH, RUNPATH, libPath, the system's
// directories), without running anything. It returns ErrNoMPI (wrapped) for
// a program that links no MPI (a script, a static or non-MPI program), and
// an error for a program that links two MPIs.
func Detect(path string, libPath []string) (Kind, error) {
	seen := map[string]bool{}
	found := map[Kind]string{}
	queue := []string{path}
	for len(queue) > 0 && len(seen) < maxLibs {
		file := queue[0]
		queue = queue[1:]
		if seen[file] {
			continue
		}
		seen[file] = true
		needed, dirs, err := dynamicInfo(file)
		if err != nil {
			if file == path {
				return "", err
			}
			continue
		}
		for _, lib := range needed {
			if k, ok := sonames[lib]; ok {
				found[k] = lib
				continue
			}
			if p := findLib(lib, append(append(dirs, libPath...), defaultLibDirs...)); p != "" && !seen[p] {
				queue = append(queue, p)
			}
		}
	}
	switch {
	case len(found) == 0:
		return "", fmt.Errorf("%s %w (%s or %s)", path, ErrNoMPI, MPICH.Library(), OpenMPI.Library())
	case len(found) > 1:
		return "", fmt.Errorf("%s links both MPICH (%s) and Open MPI (%s): give --mpi mpich or --mpi openmpi", path, found[MPICH], found[OpenMPI])
	}
	for k := range found {
		return k, nil
	}
	return "", nil
}

// dynamicInfo reads the libraries an ELF file needs and its RPATH/RUNPATH
// directories ($ORIGIN expanded).
func dynamicInfo(path string) (needed, dirs []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil, nil, fmt.Errorf("%s is not an ELF program (%v), so it %w", path, err, ErrNoMPI)
		}
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	needed, err = f.DynString(elf.DT_NEEDED)
	if err != nil {
		return nil, nil, nil // static: no dynamic section
	}
	origin := filepath.Dir(path)
	for _, tag := range []elf.DynTag{elf.DT_RPATH, elf.DT_RUNPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range filepath.SplitList(v) {
				d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
				if d != "" {
					dirs = append(dirs, d)
				}
			}
		}
	}
	return needed, dirs, nil
}

func findLib(name string, dirs []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Choose settles the MPI of a job of np > 1 ranks running argv0 (looked up
// with env's PATH, relative to dir) when the user asked for asked: Auto
// takes the MPI the program links; an MPI asked for must not contradict
// it. A program that links no MPI needs an MPI asked for (an mpi4py script
// runs under python3, which links none).
func Choose(asked Kind, argv0 string, env []string, dir string) (Kind, error) {
	path, err := lookPath(argv0, env, dir)
	if err != nil {
		if asked != Auto {
			return asked, nil // the pod says what is missing
		}
		return "", fmt.Errorf("cannot tell which MPI %s uses: %w; give --mpi mpich or --mpi openmpi", argv0, err)
	}
	var libPath []string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "LD_LIBRARY_PATH="); ok {
			libPath = filepath.SplitList(v)
		}
	}
	found, err := Detect(path, libPath)
	switch {
	case errors.Is(err, ErrNoMPI) && asked != Auto:
		return asked, nil
	case errors.Is(err, ErrNoMPI):
		return "", fmt.Errorf("%w: more than one rank needs an MPI program (use --np 1 to run it once, in one pod); "+
			"if it uses MPI through an interpreter (an mpi4py script), give --mpi mpich or --mpi openmpi", err)
	case err != nil:
		if asked != Auto {
			return asked, nil
		}
		return "", fmt.Errorf("cannot tell which MPI %s uses: %w; give --mpi mpich or --mpi openmpi", path, err)
	case asked != Auto && asked != found:
		return "", fmt.Errorf("%s links %s (%s), not %s: drop --mpi %s, or give --mpi %s", path, found.Library(), found.Name(), asked.Name(), asked, found)
	}
	return found, nil
}

// lookPath finds a command as a shell with env's PATH, in dir, would.
func lookPath(name string, env []string, dir string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH", name)
}
