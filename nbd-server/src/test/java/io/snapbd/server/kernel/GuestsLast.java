package io.snapbd.server.kernel;

import org.junit.jupiter.api.ClassDescriptor;
import org.junit.jupiter.api.ClassOrderer;
import org.junit.jupiter.api.ClassOrdererContext;

import java.util.Comparator;

/**
 * Orders the {@link UmlGuest} classes after all others and keeps every other order as discovered (the sort is
 * stable): their guests run in the background from the start ({@link GuestRuns}), so by the time their turn
 * comes the other tests have given them the time to finish. Set by the module's failsafe configuration
 * ({@code junit.jupiter.testclass.order.default}).
 */
public final class GuestsLast implements ClassOrderer {
    @Override
    public void orderClasses(ClassOrdererContext context) {
        context.getClassDescriptors().sort(Comparator.comparing((ClassDescriptor d) -> d.isAnnotated(UmlGuest.class)));
    }
}
