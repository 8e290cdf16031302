import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;

/**
 * Apache Avro's own verdict on schema pairs, for the differential test of pipeline.evolution.avro_compat.
 *
 * <p>Reads one JSON array [reader, writer] per line on stdin and answers one line per pair on
 * stdout, flushed, so a caller can ask pair by pair or send thousands at once: COMPATIBLE,
 * INCOMPATIBLE, INVALID (a schema does not parse; the reason follows) or ERROR (the checker
 * threw; the reason follows). Each schema gets its own parser: reader and writer names never mix.
 */
public final class AvroCompatibilityOracle {
  private AvroCompatibilityOracle() {}

  public static void main(String[] args) throws Exception {
    ObjectMapper json = new ObjectMapper();
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintWriter out = new PrintWriter(System.out, false, StandardCharsets.UTF_8);
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      out.println(verdict(json, line));
      out.flush();
    }
  }

  private static String verdict(ObjectMapper json, String line) {
    Schema reader;
    Schema writer;
    try {
      JsonNode pair = json.readTree(line);
      reader = new Schema.Parser().parse(pair.get(0).toString());
      writer = new Schema.Parser().parse(pair.get(1).toString());
    } catch (Exception e) {
      return "INVALID " + oneLine(e);
    }
    try {
      return SchemaCompatibility.checkReaderWriterCompatibility(reader, writer)
          .getType()
          .toString();
    } catch (Exception e) {
      return "ERROR " + oneLine(e);
    }
  }

  private static String oneLine(Exception e) {
    return (e.getClass().getSimpleName() + ": " + e.getMessage()).replaceAll("\\s+", " ");
  }
}
