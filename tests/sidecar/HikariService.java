// A legacy-style JDBC service: one HikariCP pool of 4 connections, logged in
// to rowgate as the service "legacy", shared by every user. Each request
// runs in a transaction whose first statement names its user with a
// PreparedStatement: select set_config('rowgate.token', ?, true).
//
// Usage: java -cp HikariCP.jar:slf4j-api.jar:slf4j-nop.jar:postgresql.jar \
//   HikariService.java HOST PORT DBNAME SERVICE PASSWORD TOKENS_FILE ROUNDS
// TOKENS_FILE has one "user_id token" per line (tokens stay out of argv).
// Prints "OK requests=N" when every request saw exactly its user's rows and
// every request without a token saw none; exits 1 otherwise.

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public class HikariService {
    static String request(HikariDataSource ds, String user, String token) throws Exception {
        List<String> seen = new ArrayList<>();
        String uid;
        try (Connection conn = ds.getConnection()) {
            if (token != null) {
                try (PreparedStatement ps = conn.prepareStatement("select set_config('rowgate.token', ?, true)")) {
                    ps.setString(1, token);
                    ps.execute();
                }
            }
            try (PreparedStatement q = conn.prepareStatement(
                    "select auth.user_id(), owner, body from notes order by body");
                 ResultSet rs = q.executeQuery()) {
                uid = null;
                while (rs.next()) {
                    uid = rs.getString(1);
                    seen.add(rs.getString(2));
                }
            }
            if (seen.isEmpty()) {
                try (PreparedStatement q = conn.prepareStatement("select auth.user_id()");
                     ResultSet rs = q.executeQuery()) {
                    rs.next();
                    uid = rs.getString(1);
                }
            }
            conn.commit();
        }
        if (user == null) {
            if (!seen.isEmpty() || uid != null) {
                return "request without a token saw " + seen.size() + " rows as " + uid;
            }
            return null;
        }
        if (seen.size() != 2 || !user.equals(uid) || seen.stream().anyMatch(o -> !o.equals(user))) {
            return "request of " + user + " saw " + seen + " as " + uid;
        }
        return null;
    }

    public static void main(String[] a) throws Exception {
        Map<String, String> tokens = new LinkedHashMap<>();
        for (String line : Files.readAllLines(Paths.get(a[5]))) {
            String[] p = line.trim().split(" ");
            if (p.length == 2) tokens.put(p[0], p[1]);
        }
        int rounds = Integer.parseInt(a[6]);
        HikariConfig c = new HikariConfig();
        c.setJdbcUrl("jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?sslmode=disable");
        c.setUsername(a[3]);
        c.setPassword(a[4]);
        c.setMaximumPoolSize(4);
        c.setMinimumIdle(4);
        c.setAutoCommit(false);
        c.setConnectionTimeout(20000);
        int requests = 0;
        List<String> failures = new ArrayList<>();
        try (HikariDataSource ds = new HikariDataSource(c)) {
            ExecutorService pool = Executors.newFixedThreadPool(16);
            List<Future<String>> results = new ArrayList<>();
            for (int r = 0; r < rounds; r++) {
                for (Map.Entry<String, String> e : tokens.entrySet()) {
                    results.add(pool.submit(() -> request(ds, e.getKey(), e.getValue())));
                }
                results.add(pool.submit(() -> request(ds, null, null)));
            }
            for (Future<String> f : results) {
                requests++;
                try {
                    String fail = f.get(60, TimeUnit.SECONDS);
                    if (fail != null) failures.add(fail);
                } catch (Exception e) {
                    failures.add("request failed: " + e.getCause());
                }
            }
            pool.shutdown();
        }
        if (!failures.isEmpty()) {
            System.out.println("FAILED " + failures.size() + " of " + requests + ": " + failures.subList(0, Math.min(5, failures.size())));
            System.exit(1);
        }
        System.out.println("OK requests=" + requests);
    }
}
