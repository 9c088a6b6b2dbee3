package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.volume.DataDirBusyException;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.api.Json;
import io.snapbd.server.service.FileSpaces;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "fsck", mixinStandardHelpOptions = true,
        description = "Verify every file of the data directory's volumes (read-only; the server must be stopped). Exit 0 when clean, 4 when problems are found.")
final class FsckCommand implements Callable<Integer> {

    @CommandLine.Mixin
    Cli.DataDirOption dataDir;

    @Parameters(arity = "0..*", paramLabel = "VOLUME", description = "Volumes to check (default: all).")
    List<String> volumes = new ArrayList<>();

    @Option(names = "--quick", description = "Skip the data scan (blocks not in use must read as zeros).")
    boolean quick;

    @Option(names = "--json", description = "Print JSON.")
    boolean json;

    @Override
    public Integer call() throws IOException {
        ArrayNode out = Json.MAPPER.createArrayNode();
        boolean ok = true;
        try (VolumeCatalog catalog = VolumeCatalog.open(dataDir.resolve(), FileSpaces.best(), false)) {
            List<String> names = volumes.isEmpty() ? catalog.names() : volumes;
            for (String name : names) {
                if (!catalog.exists(name)) {
                    throw new Cli.ExitException(2, "no volume named " + name);
                }
                VolumeChecker.Report r = VolumeChecker.check(catalog.volumeDir(name), !quick);
                ok &= r.ok();
                ObjectNode o = out.addObject();
                o.put("volume", name);
                o.put("ok", r.ok());
                o.put("blocksInUse", r.blocksInUse());
                o.put("blocksScanned", r.blocksScanned());
                r.problems().forEach(o.putArray("problems")::add);
                r.notes().forEach(o.putArray("notes")::add);
                if (!json) {
                    System.out.println(name + ": " + (r.ok() ? "clean" : r.problems().size() + " problem(s)")
                            + " (" + r.blocksInUse() + " blocks in use" + (quick ? "" : ", " + r.blocksScanned() + " unused blocks scanned") + ")");
                    r.problems().forEach(p -> System.out.println("  problem: " + p));
                    r.notes().forEach(n -> System.out.println("  note: " + n));
                }
            }
        } catch (DataDirBusyException e) {
            throw new Cli.ExitException(2, e.getMessage() + ": stop the server before fsck");
        } catch (NoSuchFileException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        if (json) {
            Cli.printJson(out);
        }
        return ok ? 0 : 4;
    }
}
