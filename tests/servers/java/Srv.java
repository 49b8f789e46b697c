import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;

/*
 * Srv.java - a thread-per-connection HTTP/1.1 server in the style of the
 * classic java.net servers (blocking ServerSocket, one Thread per accepted
 * connection, blocking streams). Answers GET /missing with a 404 and every
 * other request with a fixed body,
 * keeps connections alive, prints "listening PORT" once bound and "stopped"
 * from a shutdown hook (SIGTERM goes through the JVM's signal dispatcher
 * thread). Usage: java Srv PORT (0: any free port)
 */
public class Srv {
    static final byte[] RESP = ("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world\n").getBytes(StandardCharsets.US_ASCII);
    static final byte[] MISSING = ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").getBytes(StandardCharsets.US_ASCII);
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
    /* Reads requests to their blank line and answers each: GET /missing
     * with a 404, anything else with the fixed body (the bodies of GET
     * requests are empty). */
    static void serve(Socket s) {
        try (s) {
            s.setTcpNoDelay(true);
            InputStream in = new BufferedInputStream(s.getInputStream(), 8192);
            OutputStream out = s.getOutputStream();
            StringBuilder line = new StringBuilder();
            String first = null;
            int c;
            while ((c = in.read()) >= 0) {
                if (c == '\r')
                    continue;
                if (c != '\n') {
                    line.append((char) c);
                    continue;
                }
                if (first == null) {
                    first = line.toString();
                } else if (line.length() == 0) {
                    out.write(first.startsWith("GET /missing ") ? MISSING : RESP);
                    out.flush();
                    first = null;
                }
                line.setLength(0);
            }
        } catch (IOException e) {
        }
    }
}
