// go_http - a goroutine-per-connection HTTP/1.1 keep-alive server.
//
//	go_http PORT
//
// The Go reference point for fibershim: net.Listen, one goroutine per
// accepted connection, blocking-style reads and writes that the Go runtime
// turns into netpoller waits - the same model the shim gives a pthread
// server. It deliberately does NOT use net/http: net/http does far more work
// per request (full header parsing into maps, Date headers, chunking logic,
// a goroutine-per-connection plus background reader), so it would measure
// the HTTP library rather than the concurrency model. Instead it does the
// same minimal protocol work as the C servers (bench/servers/http_min.h):
// read the header block up to the empty line, look for "Connection: close",
// answer with a fixed 13-byte body. SIGTERM/SIGINT print the number of
// requests served and exit.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

const maxRequest = 8192 // largest accepted header block, as in the C servers

var (
	respKeep = []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n" +
		"Hello, World!")
	respClose = []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n" +
		"Connection: close\r\n\r\nHello, World!")
	connectionHdr = []byte("connection:")
	closeToken    = []byte("close")
)

var served atomic.Int64

// wantsClose reports whether one header line is "Connection: close".
func wantsClose(line []byte) bool {
	if len(line) < len(connectionHdr) || !bytes.EqualFold(line[:len(connectionHdr)], connectionHdr) {
		return false
	}
	v := bytes.TrimLeft(line[len(connectionHdr):], " \t")
	return len(v) >= len(closeToken) && bytes.EqualFold(v[:len(closeToken)], closeToken)
}

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, maxRequest)
	w := bufio.NewWriterSize(c, 4096)
	for {
		closing := false
		size := 0
		for lineNo := 0; ; lineNo++ {
			line, err := r.ReadSlice('\n')
			if err != nil { // EOF, error, or a line longer than maxRequest
				return
			}
			size += len(line)
			if size > maxRequest {
				return
			}
			if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
				if lineNo == 0 {
					return // no request line
				}
				break // end of the header block
			}
			if lineNo > 0 && wantsClose(line) {
				closing = true
			}
		}
		served.Add(1)
		resp := respKeep
		if closing {
			resp = respClose
		}
		if _, err := w.Write(resp); err != nil {
			return
		}
		// Flush once no further pipelined request is already buffered.
		if closing || r.Buffered() == 0 {
			if err := w.Flush(); err != nil || closing {
				return
			}
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go_http PORT")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil || port < 1 || port > 65535 {
		fmt.Fprintln(os.Stderr, "usage: go_http PORT")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		fmt.Fprintf(os.Stderr, "go_http: served %d requests\n", served.Load())
		os.Exit(0)
	}()

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_http:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			// EMFILE/ENFILE and other temporary errors: back off and retry.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		go serve(c)
	}
}
