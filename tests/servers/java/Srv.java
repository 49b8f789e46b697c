import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;

/*
 * Srv.java - a thread-per-connection HTTP/1.1 server in the style of the
 * classic java.net servers (blocking ServerSocket, one Thread per accepted
 * connection, blocking streams). Answers every request with a fixed body,
 * keeps connections alive, prints "listening PORT" once bound and "stopped"
 * from a shutdown hook (SIGTERM goes through the JVM's signal dispatcher
 * thread). Usage: java Srv PORT (0: any free port)
 */
public class Srv {
    static final byte[] RESP = ("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world\n").getBytes(StandardCharsets.US_ASCII);
    public static void main(String[] a) throws Exception {
        ServerSocket ss = new ServerSocket();
        ss.setReuseAddress(true);
        ss.bind(new InetSocketAddress("127.0.0.1", Integer.parseInt(a[0])), 4096);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("stopped")));
        System.out.println("listening " + ss.getLocalPort());
        System.out.flush();
        while (true) {
            Socket s = ss.accept();
            new Thread(() -> serve(s)).start();
        }
    }
    /* Reads requests to their blank line, answers each: the bodies of
     * GET requests are empty. */
    static void serve(Socket s) {
        try (s) {
            s.setTcpNoDelay(true);
            InputStream in = new BufferedInputStream(s.getInputStream(), 8192);
            OutputStream out = s.getOutputStream();
            int state = 0, c;
            while ((c = in.read()) >= 0) {
                // end of headers: \r\n\r\n
                if (c == '\r' && (state == 0 || state == 2)) state++;
                else if (c == '\n' && (state == 1 || state == 3)) state++;
                else state = 0;
                if (state == 4) { out.write(RESP); out.flush(); state = 0; }
            }
        } catch (IOException e) { }
    }
}
