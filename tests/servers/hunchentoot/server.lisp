;;;; server.lisp - the seed's Hunchentoot server, for tests/servers and
;;;; bench/real-servers: an easy-acceptor with Hunchentoot's default
;;;; one-thread-per-connection taskmaster (one SBCL thread per connection),
;;;; raised to 10,000 connections, and one handler returning a short fixed
;;;; body. Hunchentoot and its dependencies come from Debian's Common Lisp
;;;; source registry (/usr/share/common-lisp, package cl-hunchentoot),
;;;; compiled by ASDF into $XDG_CACHE_HOME on first use.
;;;;
;;;; Environment:
;;;;   HT_PORT       port to listen on, on 127.0.0.1 (required); 0 takes a
;;;;                 free port, which the "listening" line names
;;;;   HT_SAVE_CORE  if set: load Hunchentoot, then save a core there
;;;;                 (save-lisp-and-die) instead of serving; start it with
;;;;                 `sbcl --core FILE --no-sysinit --no-userinit`, which runs
;;;;                 MAIN (HT_PORT is read then).
;;;;
;;;; Usage:
;;;;   HT_PORT=8080 sbcl --non-interactive --no-sysinit --no-userinit --load server.lisp
;;;;
;;;; Prints "listening PORT" on stdout once the socket listens. GET / answers
;;;; 200 with the body "Hello from Hunchentoot\n". SIGTERM or SIGINT stop the
;;;; acceptor and exit with status 0.

(require :asdf)
(asdf:load-system :hunchentoot)

(defpackage :fibershim-ht
  (:use :cl)
  (:export #:main))
(in-package :fibershim-ht)

(defparameter *body* (format nil "Hello from Hunchentoot~%"))
(defvar *stop* nil)

(hunchentoot:define-easy-handler (hello :uri "/") ()
  (setf (hunchentoot:content-type*) "text/plain")
  *body*)

(defun env-port ()
  (let ((s (sb-ext:posix-getenv "HT_PORT")))
    (or (and s (parse-integer s :junk-allowed t))
        (progn (format *error-output* "server.lisp: HT_PORT is not set~%")
               (sb-ext:exit :code 2 :abort t)))))

(defun main ()
  (let* ((port (env-port))
         (acceptor (make-instance
                    'hunchentoot:easy-acceptor
                    :address "127.0.0.1" :port port
                    :listen-backlog 10000
                    :access-log-destination nil
                    :message-log-destination *error-output*
                    :taskmaster (make-instance
                                 'hunchentoot:one-thread-per-connection-taskmaster
                                 :max-thread-count 10100
                                 :max-accept-count 10200)))
         (stop (sb-thread:make-semaphore :name "stop")))
    (setf *stop* stop)
    ;; The handlers only signal the semaphore; main stops the acceptor.
    (flet ((on-signal (signo info context)
             (declare (ignore signo info context))
             (sb-thread:signal-semaphore stop)))
      (sb-sys:enable-interrupt sb-unix:sigterm #'on-signal)
      (sb-sys:enable-interrupt sb-unix:sigint #'on-signal))
    (hunchentoot:start acceptor)
    (format t "listening ~D~%"
            (usocket:get-local-port (hunchentoot::acceptor-listen-socket acceptor)))
    (finish-output)
    (sb-thread:wait-on-semaphore stop)
    (hunchentoot:stop acceptor)
    (format t "stopped~%")
    (finish-output)
    (sb-ext:exit :code 0 :timeout 10)))

(let ((core (sb-ext:posix-getenv "HT_SAVE_CORE")))
  (if (and core (plusp (length core)))
      (sb-ext:save-lisp-and-die core :toplevel #'main :executable nil)
      (main)))
