import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import java.util.stream.*;

/*
 * Conf.java - what a JVM asks of threads, with a deterministic output that
 * must be the same plain and under the shim: monitors (synchronized,
 * wait/notify), an executor, a parallel stream (ForkJoinPool), sleep and
 * interrupt, implicit null checks (the JVM's SIGSEGV handler turns a fault
 * into NullPointerException), StackOverflowError in a thread with a 1 MiB
 * stack (the JVM's guard zones, placed from pthread_getattr_np), a GC with
 * 200 threads parked (safepoints), ConcurrentHashMap and atomics from 32
 * threads, ThreadLocal across sleeps.
 */
public class Conf {
    static int depth = 0;
    static void recurse() { depth++; recurse(); }
    public static void main(String[] a) throws Exception {
        // 1. threads + synchronized + wait/notify
        final Object lock = new Object();
        final int[] counter = {0};
        Thread[] ts = new Thread[16];
        for (int i = 0; i < ts.length; i++) {
            ts[i] = new Thread(() -> { for (int j = 0; j < 100000; j++) synchronized (lock) { counter[0]++; } });
            ts[i].start();
        }
        for (Thread t : ts) t.join();
        System.out.println("synchronized counter " + counter[0]);
        // 2. wait/notify ping-pong
        final int[] turn = {0};
        Thread p = new Thread(() -> { for (int i = 0; i < 10000; i++) synchronized (lock) { while (turn[0] != 1) { try { lock.wait(); } catch (InterruptedException e) {} } turn[0] = 0; lock.notifyAll(); } });
        p.start();
        for (int i = 0; i < 10000; i++) synchronized (lock) { while (turn[0] != 0) lock.wait(); turn[0] = 1; lock.notifyAll(); }
        p.join();
        System.out.println("wait/notify done");
        // 3. executor + futures
        ExecutorService ex = Executors.newFixedThreadPool(8);
        List<Future<Long>> fs = new ArrayList<>();
        for (int i = 0; i < 100; i++) { final int k = i; fs.add(ex.submit(() -> { long s = 0; for (int j = 0; j < 100000; j++) s += j % (k + 1); return s; })); }
        long tot = 0; for (Future<Long> f : fs) tot += f.get();
        ex.shutdown(); ex.awaitTermination(10, TimeUnit.SECONDS);
        System.out.println("executor sum " + tot);
        // 4. parallel stream (ForkJoinPool)
        long ps = LongStream.range(0, 20000000).parallel().map(x -> x % 7).sum();
        System.out.println("parallel sum " + ps);
        // 5. sleep / interrupt
        Thread sl = new Thread(() -> { try { Thread.sleep(10000); System.out.println("not interrupted?!"); } catch (InterruptedException e) { System.out.println("sleep interrupted"); } });
        sl.start(); Thread.sleep(50); sl.interrupt(); sl.join();
        // 6. NullPointerException (implicit null check via SIGSEGV), in a thread
        Thread np = new Thread(() -> { int n = 0; for (int i = 0; i < 100000; i++) { try { String s = (i % 1000 == 0) ? null : "x"; n += s.length(); } catch (NullPointerException e) { n += 1000; } } System.out.println("npe n=" + n); });
        np.start(); np.join();
        // 7. StackOverflowError in a thread with a 1 MiB stack
        Thread so = new Thread(null, () -> { try { recurse(); } catch (StackOverflowError e) { System.out.println("stack overflow caught, depth>1000: " + (depth > 1000)); } }, "so", 1 << 20);
        so.start(); so.join();
        // 8. GC with many threads alive
        List<Thread> sleepers = new ArrayList<>();
        CountDownLatch latch = new CountDownLatch(1);
        for (int i = 0; i < 200; i++) { Thread t = new Thread(() -> { try { latch.await(); } catch (InterruptedException e) {} }); t.start(); sleepers.add(t); }
        List<byte[]> junk = new ArrayList<>();
        for (int i = 0; i < 2000; i++) { junk.add(new byte[100000]); if (junk.size() > 100) junk.clear(); }
        System.gc();
        latch.countDown(); for (Thread t : sleepers) t.join();
        System.out.println("gc with 200 threads ok");
        // 9. ConcurrentHashMap + atomic from many threads
        ConcurrentHashMap<Integer, Integer> m = new ConcurrentHashMap<>();
        AtomicLong al = new AtomicLong();
        Thread[] ws = new Thread[32];
        for (int i = 0; i < ws.length; i++) { final int k = i; ws[i] = new Thread(() -> { for (int j = 0; j < 10000; j++) { m.merge(j % 1000, 1, Integer::sum); al.incrementAndGet(); } }); ws[i].start(); }
        for (Thread t : ws) t.join();
        System.out.println("chm size " + m.size() + " total " + m.values().stream().mapToInt(Integer::intValue).sum() + " atomic " + al.get());
        // 10. thread names, ids stable, ThreadLocal
        ThreadLocal<Integer> tl = ThreadLocal.withInitial(() -> -1);
        Thread[] tls = new Thread[8]; final boolean[] ok = {true};
        for (int i = 0; i < tls.length; i++) { final int k = i; tls[i] = new Thread(() -> { tl.set(k); for (int j = 0; j < 100; j++) { try { Thread.sleep(1); } catch (InterruptedException e) {} if (tl.get() != k) ok[0] = false; } }); tls[i].start(); }
        for (Thread t : tls) t.join();
        System.out.println("threadlocal ok " + ok[0]);
    }
}
